"""Feature cache keyed by checkpoint hash, and `fm4npp finetune/evaluate` end to end on a tiny
data set with a tiny random backbone (the pipeline is what is tested, not the physics)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import fresh_mlflow_uri, make_event_table

torch.set_num_threads(1)  # 2 shared cores: a second thread only adds contention


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from fm4npp.data.convert import write_dataset
    from fm4npp.data.io import read_events
    from fm4npp.serialize.bins import fit_bins, save_bins
    from fm4npp.serialize.config import SerializeConfig

    d = tmp_path_factory.mktemp("events")
    write_dataset([make_event_table(40, 3, max_tracks=4)], d)
    save_bins(fit_bins(read_events(d), SerializeConfig(k=4, n_difficulty_bins=3)), d / "bins.json")
    return d


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, data_dir):
    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.io import save_pretrained
    from fm4npp.model.presets import get_preset
    from fm4npp.serialize.bins import load_bins

    torch.manual_seed(0)
    model = FM4NPP(get_preset("w8", n_layers=2, k=4))
    d = tmp_path_factory.mktemp("fm")
    save_pretrained(model, d, extra={"bins_hash": load_bins(data_dir / "bins.json").hash})
    return d


def test_feature_cache_hit_miss_keyed_by_checkpoint(tmp_path, backbone_dir):
    from fm4npp.downstream.features import FeatureCache, backbone_states, checkpoint_hash, load_backbone
    from fm4npp.downstream.synthetic import toy_events
    from fm4npp.model.io import save_pretrained

    events = toy_events(3, seed=5, n_tracks=2, n_layers=6)
    model, extra = load_backbone(backbone_dir)
    h = checkpoint_hash(backbone_dir)
    cache = FeatureCache(tmp_path, h)
    first = backbone_states(model, events, cache=cache, batch_size=2)
    assert (cache.hits, cache.misses) == (0, 3)
    assert first[0].shape == (len(events[0]["energy"]), 3, 8) and first[0].dtype == torch.float16
    again = FeatureCache(tmp_path, h)
    second = backbone_states(model, events, cache=again)
    assert (again.hits, again.misses) == (3, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # states equal the backbone's own hidden states (one event, no padding)
    e = events[1]
    _, hid = model(torch.as_tensor(e["coords"])[None], torch.as_tensor(e["energy"])[None], return_hidden=True)
    assert torch.allclose(second[1].float(), torch.stack(hid, 2)[0], atol=1e-2, rtol=1e-2)
    # another checkpoint (one weight changed) must miss
    with torch.no_grad():
        model.blocks[0].mixer.out_proj.weight.add_(0.1)
    other = tmp_path / "other_ckpt"
    save_pretrained(model, other, extra=extra)
    h2 = checkpoint_hash(other)
    assert h2 != h
    c2 = FeatureCache(tmp_path, h2)
    backbone_states(model, events, cache=c2)
    assert (c2.hits, c2.misses) == (0, 3)
    # another event content must miss too
    events[0]["energy"] = events[0]["energy"] + 1.0
    c3 = FeatureCache(tmp_path, h)
    backbone_states(model, events, cache=c3)
    assert (c3.hits, c3.misses) == (2, 1)


def test_layer_mix_is_a_convex_combination():
    from fm4npp.downstream.features import LayerMix

    mix = LayerMix(3)
    s = torch.randn(2, 5, 3, 4)
    s[:, :, 1] = s[:, :, 0]
    s[:, :, 2] = s[:, :, 0]
    out = mix(s)
    assert torch.allclose(out, torch.nn.functional.layer_norm(s[:, :, 0], (4,)), atol=1e-5)
    out.sum().backward()
    assert mix.logits.grad is not None


def test_fm_layers_selects_cached_states():
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.downstream.features import FrozenFMSource

    states = torch.randn(2, 5, 4, 6)  # backbone with 3 blocks: embedding + 3 states
    cfg = FinetuneConfig(source="fm", backbone="x", fm_layers="0")
    only_embedding = FrozenFMSource(cfg.layer_indices(4), 6, whiten_eps=0)
    assert torch.allclose(only_embedding({"states": states}),
                          torch.nn.functional.layer_norm(states[:, :, 0], (6,)), atol=1e-6)
    two = FrozenFMSource(FinetuneConfig(source="fm", backbone="x", fm_layers="0,3").layer_indices(4), 6, 0)
    mean = torch.nn.functional.layer_norm(states[:, :, [0, 3]], (6,)).mean(2)  # equal weights at init
    assert torch.allclose(two({"states": states}), mean, atol=1e-6)
    assert FinetuneConfig(source="fm", backbone="x").layer_indices(4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="out of range"):
        FinetuneConfig(source="fm", backbone="x", fm_layers="4").layer_indices(4)
    with pytest.raises(ValueError, match="fm_layers"):
        FinetuneConfig(source="fm", backbone="x", fm_layers="last")


def test_fm_combine_concat_keeps_every_layer_apart():
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.downstream.features import FrozenFMSource

    states = torch.randn(2, 5, 4, 6)
    cat = FrozenFMSource([0, 2, 3], 6, whiten_eps=0, combine="concat")
    out = cat({"states": states})
    assert cat.d_out == 18 and out.shape == (2, 5, 18) and cat.mix is None
    normed = torch.nn.functional.layer_norm(states, (6,))
    for j, layer in enumerate([0, 2, 3]):  # layer j's block of the output is that layer alone
        assert torch.allclose(out[..., 6 * j : 6 * (j + 1)], normed[:, :, layer], atol=1e-6)
    # whitening is per layer, fitted on the same normalised states
    w = FrozenFMSource([0, 2], 6, whiten_eps=1e-6, combine="concat")
    w.fit_whitening([], [s for s in torch.randn(3, 400, 4, 6) * torch.arange(1.0, 7.0)], 10_000)
    flat = w({"states": torch.randn(3, 400, 4, 6) * torch.arange(1.0, 7.0)}).reshape(-1, 2, 6)
    for grp in range(2):
        assert torch.cov(flat[:, grp].T).diagonal().sub(1).abs().max() < 0.3
    with pytest.raises(ValueError, match="fm_combine"):
        FinetuneConfig(source="fm", backbone="x", fm_combine="sum")
    with pytest.raises(ValueError, match="combine"):
        FrozenFMSource([0], 6, whiten_eps=0, combine="sum")


def test_fm_with_raw_joins_the_raw_inputs_and_round_trips(tmp_path, data_dir, backbone_dir):
    from fm4npp.cli import main
    from fm4npp.downstream.baselines import RawSource, raw_features
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.downstream.features import FrozenFMSource
    from fm4npp.downstream.adapters import load_adapter
    from fm4npp.downstream.model import build_source
    from fm4npp.model.presets import get_preset

    mcfg = get_preset("w8", n_layers=2, k=4)
    cfg = FinetuneConfig(source="fm", backbone="x", fm_combine="concat", fm_with_raw=True, whiten_eps=0)
    src = build_source(cfg, mcfg)
    batch = {"states": torch.randn(2, 5, 3, 8), "coords": torch.rand(2, 5, 3), "energy": torch.randn(2, 5)}
    fm, raw = FrozenFMSource([0, 1, 2], 8, 0, "concat"), RawSource(cfg.raw_n_freq, 0)
    assert src.kind == "fm" and src.d_out == fm.d_out + raw.d_out
    out = src(batch)  # the FM block first, then exactly AdapterOnly's features
    assert torch.allclose(out[..., : fm.d_out], fm(batch), atol=1e-6)
    assert torch.equal(out[..., fm.d_out :], raw_features(batch["coords"], batch["energy"], cfg.raw_n_freq))

    out_dir = tmp_path / "adapter"
    assert main(["finetune", "--task", "pid", "--source", "fm", "--data", str(data_dir), "--backbone",
                 str(backbone_dir), "--epochs", "1", "--set", "val_events=0", "--set", "fm_combine=concat",
                 "--set", "fm_with_raw=true", "--set", f"cache_dir={tmp_path / 'cache'}",
                 "--out", str(out_dir)]) == 0
    model, _, res = load_adapter(out_dir)  # both whitenings travel with the adapter
    assert res["config"]["fm_with_raw"] and model.adapter.proj.in_features == src.d_out
    assert main(["evaluate", "--adapter", str(out_dir), "--json", str(tmp_path / "ev.json")]) == 0
    again = json.loads((tmp_path / "ev.json").read_text())["results"][0]["metrics"]
    assert again["accuracy"] == pytest.approx(res["metrics"]["accuracy"])


def test_whitening_decorrelates_and_keeps_information():
    from fm4npp.downstream.features import Whitening

    g = torch.Generator().manual_seed(0)
    # two groups of ill-conditioned features: variances spanning 1e4 in rotated directions
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    z = torch.randn(20000, 2, 5, generator=g) * torch.tensor([100.0, 10.0, 1.0, 0.3, 1.0])
    x = z @ q.T + torch.tensor([3.0, -1.0, 0.0, 2.0, 5.0])
    w = Whitening(2, 5, eps=1e-9).fit(x)
    y = w(x)
    for grp in range(2):
        assert torch.allclose(torch.cov(y[:, grp].T), torch.eye(5), atol=1e-3)
        assert y[:, grp].mean(0).abs().max() < 1e-4
    # invertible: the original features come back exactly (up to float32 round-off)
    back = torch.linalg.solve(w.matrix[0], y[:, 0].T).T + w.mean[0]
    assert torch.allclose(back, x[:, 0], atol=1e-3)
    # eps floors small eigenvalues so dead directions are not blown up
    capped = Whitening(1, 5, eps=1e-2).fit(x[:, :1])
    assert torch.cov(capped(x[:, :1])[:, 0].T).diagonal().min() < 0.5
    # unfitted = identity; the fit travels in the state dict (saved with the adapter)
    assert torch.equal(Whitening(2, 5, eps=1e-3)(x), x)
    fresh = Whitening(2, 5, eps=1e-3)
    fresh.load_state_dict(w.state_dict())
    assert torch.equal(fresh(x), y)


def test_cli_finetune_and_evaluate(tmp_path, data_dir, backbone_dir, capsys):
    from fm4npp.cli import main

    out = tmp_path / "adapter"
    common = ["--data", str(data_dir), "--backbone", str(backbone_dir), "--epochs", "1",
              "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "val_events=0",
              "--set", "tracking.n_queries=6", "--set", "tracking.n_layers=1"]
    assert main(["finetune", "--task", "tracking", "--source", "fm", "--out", str(out)] + common) == 0
    text = capsys.readouterr().out
    assert "FM4NPP" in text and "ARI" in text
    res = json.loads((out / "result.json").read_text())
    m = res["metrics"]
    assert 0 <= m["efficiency"] <= 1 and res["backbone_params"] > 0 and res["n_test_events"] > 0
    # every test track has kinematics, so the restricted comparison is reported
    assert "restricted_efficiency" in m
    # re-scoring the saved adapter reproduces the metrics (the features come from the cache)
    assert main(["evaluate", "--adapter", str(out), "--json", str(tmp_path / "ev.json")]) == 0
    again = json.loads((tmp_path / "ev.json").read_text())["results"][0]["metrics"]
    assert again["ari_event_mean"] == pytest.approx(m["ari_event_mean"])
    # the same events through the baseline: a Table-2-style table with both rows
    assert main(["evaluate", "--task", "noise", "--sources", "fm,raw", "--json", str(tmp_path / "t.json")]
                + common) == 0
    text = capsys.readouterr().out
    assert "AdapterOnly" in text and "FM4NPP" in text and "Noise tagging" in text
    rows = json.loads((tmp_path / "t.json").read_text())["results"]
    assert rows[0]["n_test_events"] == rows[1]["n_test_events"]


def test_cli_bad_input_exits_nonzero(tmp_path, data_dir, capsys):
    from fm4npp.cli import main

    assert main(["finetune", "--task", "pid", "--source", "fm", "--data", str(data_dir),
                 "--backbone", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["finetune", "--task", "pid", "--source", "fm", "--data", str(data_dir)]) == 2


@pytest.mark.slow
def test_studies_figures_and_resume(tmp_path, data_dir, backbone_dir, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    from fm4npp.analysis import downstream_figures as figs
    from studies import downstream_data_efficiency as de  # the checkout (pytest pythonpath ".")
    from studies import downstream_model_size as ms

    fast = ["--epochs", "1", "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "val_events=0",
            "--set", "tracking.n_queries=6", "--set", "tracking.n_layers=1"]
    assert de.main(["--data", str(data_dir), "--backbone", f"w8={backbone_dir}", "--task", "noise",
                    "--n-train", "4,12", "--name", "de"] + fast) == 0
    d7 = figs.fig7("de", tmp_path / "figs")
    assert set(d7["curves"]) == {"w8", "AdapterOnly"} and d7["curves"]["w8"]["n_train"] == [4, 12]
    assert (tmp_path / "figs" / "figure7.png").is_file()
    capsys.readouterr()
    assert de.main(["--data", str(data_dir), "--backbone", f"w8={backbone_dir}", "--task", "noise",
                    "--n-train", "4,12", "--name", "de"] + fast) == 0
    assert capsys.readouterr().out.count("done before") == 4  # resumed: nothing retrained
    assert ms.main(["--data", str(data_dir), "--backbone", f"w8={backbone_dir}", "--tasks", "pid",
                    "--n-train", "8", "--name", "ms"] + fast) == 0
    d6 = figs.fig6("ms", tmp_path / "figs")
    assert d6["pid"]["fm"][0]["backbone"] == "w8" and d6["pid"]["adapter_only"] is not None
    from fm4npp.downstream.studies import study_table

    table = study_table("ms")
    assert "FM4NPP(w8)" in table and "AdapterOnly" in table and "PID" in table
    # Figure 8 from a tracking adapter on frozen features
    from fm4npp.cli import main

    out = tmp_path / "trk"
    assert main(["finetune", "--task", "tracking", "--source", "fm", "--data", str(data_dir),
                 "--backbone", str(backbone_dir), "--out", str(out)] + fast) == 0
    info = figs.fig8(str(out), tmp_path / "figs")
    assert info["n_points"] > 0 and (tmp_path / "figs" / "figure8.pdf").is_file()


def test_cli_finetune_logs_and_saves_by_default(tmp_path, data_dir, monkeypatch, capsys):
    """No --out and no --experiment: the adapter lands under the storage root and the run is
    in MLflow (with the adapter weights as an artifact)."""
    from fm4npp import runs
    from fm4npp.cli import main

    monkeypatch.setenv("FM4NPP_STORAGE", str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    assert main(["finetune", "--task", "pid", "--source", "raw", "--data", str(data_dir),
                 "--epochs", "1", "--set", "val_events=0"]) == 0
    saved = list((tmp_path / "store" / "finetune").glob("finetune-pid-raw-*/adapter.safetensors"))
    assert len(saved) == 1
    found = runs.find_runs("fm4npp-finetune", status="FINISHED")
    assert len(found) == 1
    arts = [a.path for a in runs.client().list_artifacts(found[0].info.run_id)]
    assert {"adapter.safetensors", "result.json", "run_spec.json"} <= set(arts)
    assert found[0].data.tags["fm4npp.adapter_dir"] == str(saved[0].parent)
    # the run's spec, read back from MLflow: the config it ran (sections as dotted params)
    from mlflow.artifacts import download_artifacts

    from fm4npp.spec import read

    spec = read(download_artifacts(run_id=found[0].info.run_id, artifact_path="run_spec.json",
                                   dst_path=str(tmp_path / "art")))
    params = found[0].data.params
    assert spec.pretrain is None and spec.model is None and spec.downstream.task == "pid"
    assert spec.downstream.epochs == 1 and spec.downstream.val_events == 0
    assert params["classifier.d_embed"] == str(spec.downstream.classifier.d_embed)
    assert "MLflow tracking URI" in capsys.readouterr().out
