"""Pretraining objectives behind one interface (issue 19): knn unchanged, masked point
modelling, hybrid, knn + energies; their baselines, records and refusals. CPU, w8, seconds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import fresh_mlflow_uri
import torch

from fm4npp.model.backbone import FM4NPP
from fm4npp.pretrain.config import PretrainConfig
from fm4npp.pretrain.model_spec import model_config_for
from fm4npp.pretrain.objectives import OBJECTIVES, build_objective, objective_from_record
from fm4npp.pretrain.validation import evaluate

K = 4
NAMES = ("knn", "knn_energy", "masked", "hybrid", "supervised")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster and steadier on a shared box
    yield
    torch.set_num_threads(n)


def make_events(n_events=4, seed=0, k=K):
    """Serialized-event dicts with real next-neighbour targets: points sorted by r, targets
    and their energies from fm4npp.serialize.knn."""
    from fm4npp.serialize.knn import gather_neighbor_values, gather_targets, next_neighbors

    rng = np.random.default_rng(seed)
    out = []
    for e in range(n_events):
        n = int(rng.integers(20, 40))
        coords = rng.random((n, 3)).astype(np.float32)
        coords = coords[np.argsort(coords[:, 0], kind="stable")]
        coords[:, 2] = 0.5 * coords[:, 2] + 0.5 * coords[:, 0]  # some structure to learn
        energy = (rng.normal(size=n) + 2 * coords[:, 0] - 1).astype(np.float32)
        idx, _ = next_neighbors(coords, k)
        targets, tmask = gather_targets(coords, idx)
        out.append({"coords": coords, "energy": energy, "targets": targets, "target_mask": tmask,
                    "target_energy": gather_neighbor_values(energy, idx),
                    "weight": np.float32(rng.uniform(0.5, 2.0)), "event_id": np.int64(100 + e),
                    "order": np.arange(n), "track_id": np.zeros(n, np.int32),
                    "pid_class": (coords[:, 0] * 4.99).astype(np.int8), "noise": energy > 1.0})
    return out


def batch_of(events):
    """collate plus the target_energy field (the Ray pipeline's collate does not carry it)."""
    from fm4npp.data.pipeline import collate
    from fm4npp.downstream.features import pad_points

    b = collate(events)
    b["target_energy"] = pad_points([e["target_energy"] for e in events], dtype=torch.float32)
    return b


def setup(name, **kw):
    cfg = PretrainConfig(preset="w8", n_layers=1, objective=name, **kw)
    torch.manual_seed(0)
    return cfg, build_objective(cfg), FM4NPP(model_config_for(cfg, K))


def nullcontext():
    import contextlib

    return contextlib.nullcontext()


def mean_errors(errors: dict) -> dict:
    """An objective's per-event errors as validation reports them: mean over events with terms."""
    return {k: float(v[has].mean()) for k, (v, has) in errors.items()}


# -------------------------------------------------------------------------------- knn

def test_knn_objective_is_the_paper_loss_unchanged():
    from fm4npp.pretrain.loss import per_event_mse, pretrain_loss, trivial_predictions

    events = make_events()
    b = batch_of(events)
    for weighting in (True, False):
        cfg, obj, model = setup("knn", difficulty_weighting=weighting)
        loss, parts = obj.loss(obj.forward(model, b, step=0), b)
        preds = model(b["coords"], b["energy"], b["mask"])  # what the loop did before
        ref = pretrain_loss(preds, b["targets"], b["target_mask"], b["weight"] if weighting else None)
        assert torch.equal(loss, ref) and parts == {}
    # the model and loss are bit-for-bit those before the refactor (value from that code)
    assert float(ref.detach()) == pytest.approx(KNN_LOSS_BEFORE, rel=1e-6)
    assert sum(p.numel() for p in model.parameters()) == KNN_PARAMS_BEFORE

    # validation: the unweighted mean over events of the per-event MSE, and its baseline
    ev = [per_event_mse(preds, b["targets"], b["target_mask"])[0][i] for i in range(len(events))]
    got = evaluate(model, obj, events, 3, 0, 1, "cpu", nullcontext)
    assert got == {"val_mse": pytest.approx(float(torch.stack(ev).mean()), rel=1e-6)}
    base = per_event_mse(trivial_predictions(b["coords"], K), b["targets"], b["target_mask"])[0]
    got = evaluate(None, obj, events, 3, 0, 1, "cpu", nullcontext, baseline=True)
    assert got == {"val_baseline_mse": pytest.approx(float(base.mean()), rel=1e-6)}


# Loss of the unweighted-difficulty batch above with the pre-objectives code (FM4NPP w8,
# 1 layer, seed 0, make_events()); and that model's parameter count.
KNN_LOSS_BEFORE = 1.9838340282440186
KNN_PARAMS_BEFORE = 1570
HASH_BEFORE = "884dec45d4"  # PretrainConfig(preset="w8", data="/data").config_hash() before


# ------------------------------------------------------------------- every objective

@pytest.mark.parametrize("name", NAMES)
def test_each_objective_learns_on_a_tiny_batch(name):
    events = make_events()
    b = batch_of(events)
    cfg, obj, model = setup(name)
    obj.check_batch(b)
    with torch.no_grad():
        before = mean_errors(obj.val_errors(model, b, nullcontext))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(30):
        loss, parts = obj.loss(obj.forward(model, b, step), b)
        assert set(parts) == set(obj.metric_names) and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
    with torch.no_grad():  # validation (fixed masks, clean kNN inputs) improves too
        after = mean_errors(obj.val_errors(model, b, nullcontext))
    assert after["val_mse"] < before["val_mse"], (before, after)


def test_unknown_or_bad_objective_is_refused(tmp_path, capsys):
    from fm4npp.cli import main

    known = "known objectives: knn, knn_energy, masked, hybrid, supervised"
    with pytest.raises(ValueError, match=f"unknown objective 'nope'; {known}"):
        PretrainConfig(preset="w8", data=str(tmp_path), objective="nope").resolved()
    assert main(["pretrain", "--preset", "w8", "--data", str(tmp_path), "--objective", "nope"]) == 2
    assert known in capsys.readouterr().err
    for bad in ({"mask_fraction": 1.0}, {"mask_fraction": 0.0}):
        with pytest.raises(ValueError, match="mask_fraction"):
            PretrainConfig(preset="w8", data=str(tmp_path), objective="masked", **bad).resolved()
    with pytest.raises(ValueError, match="hybrid_weight"):
        PretrainConfig(preset="w8", data=str(tmp_path), objective="hybrid",
                       hybrid_weight=1.5).resolved()
    cfg = PretrainConfig(preset="w8", data=str(tmp_path), objective="masked").resolved()
    assert cfg.objective == "masked"
    # the new fields at their defaults leave the config hash (and derived run names) as before
    plain = PretrainConfig(preset="w8", data="/data")
    assert plain.config_hash() == HASH_BEFORE  # from the code before objectives existed
    assert plain.replace(objective="masked").config_hash() != HASH_BEFORE


def test_knn_energy_needs_the_neighbour_energies():
    events = make_events()
    _, obj, _ = setup("knn_energy")
    from fm4npp.data.pipeline import collate

    obj.check_batch(collate(events))  # serialized events carry them, and collate keeps them
    stripped = [{k: v for k, v in e.items() if k != "target_energy"} for e in events]
    with pytest.raises(ValueError, match="target_energy"):
        obj.check_batch(collate(stripped))


# -------------------------------------------------------------------------------- masked

def test_masked_points_are_hidden_behind_the_mask_token():
    from fm4npp.pretrain.objectives.base import hidden_points

    events = make_events()
    b = batch_of(events)
    cfg, obj, model = setup("masked")
    hide = hidden_points(b, 0.3, cfg.seed, step=5)
    n = b["mask"].sum(1)
    assert (hide.sum(1) == torch.round(0.3 * n.double()).long()).all()
    assert not (hide & ~b["mask"]).any()  # only real points
    assert torch.equal(hide, hidden_points(b, 0.3, cfg.seed, step=5))  # deterministic
    assert not torch.equal(hide, hidden_points(b, 0.3, cfg.seed, step=6))
    assert not torch.equal(hide, hidden_points(b, 0.3, cfg.seed + 1, step=5))
    # an event's draw does not depend on the batch it is in (ranks, world size)
    alone = hidden_points(batch_of(events[2:3]), 0.3, cfg.seed, step=5)
    assert torch.equal(alone[0, : int(n[2])], hide[2, : int(n[2])])

    out, hidden = model(b["coords"], b["energy"], b["mask"], input_mask=hide, return_heads=True,
                        return_hidden=True)
    assert torch.equal(hidden[0][hide], model.mask_token.expand(int(hide.sum()), -1))
    # whatever a hidden point's inputs are (even NaN), nothing changes anywhere
    coords, energy = b["coords"].clone(), b["energy"].clone()
    coords[hide], energy[hide] = float("nan"), 1e6
    out2 = model(coords, energy, b["mask"], input_mask=hide, return_heads=True)
    for key in out:
        assert torch.equal(out[key], out2[key]), key
    # so the loss cannot see its own targets: its gradient w.r.t. hidden inputs is zero
    coords = b["coords"].clone().requires_grad_()
    loss, _ = obj.loss({**model(coords, b["energy"], b["mask"], input_mask=hide, return_heads=True),
                        "hidden": hide}, b)
    loss.backward()
    assert (coords.grad[hide] == 0).all() and coords.grad[b["mask"] & ~hide].abs().sum() > 0
    with pytest.raises(ValueError, match="no mask token"):
        setup("knn")[2](b["coords"], b["energy"], b["mask"], input_mask=hide)


def test_baselines_are_what_trivial_predictors_get():
    events = make_events(5, seed=3)
    b = batch_of(events)
    sums = {"knn": [], "masked": [], "energy": [], "labels": []}
    _, masked, _ = setup("masked")
    hide = masked.hidden(b, None).numpy()
    for i, e in enumerate(events):
        c, en, t, m, te = e["coords"], e["energy"], e["targets"], e["target_mask"], e["target_energy"]
        d2 = ((c[:, None, :] - t) ** 2).sum(-1)  # neighbour predicted at the point itself
        sums["knn"].append(d2[m].mean())
        sums["energy"].append(((en.mean() - te) ** 2)[m].mean())  # the event's mean energy
        h = hide[i, : len(en)]
        v = np.concatenate([c, en[:, None]], 1)
        sums["masked"].append(((v[h] - v[~h].mean(0)) ** 2).sum(-1).mean())
        entropy = 0.0  # each event's own label frequencies predicted for every point
        for labels in (e["pid_class"].astype(int), e["noise"].astype(int)):
            p = np.bincount(labels) / len(labels)
            entropy -= (p[p > 0] * np.log(p[p > 0])).sum()
        sums["labels"].append(entropy)
    knn, energy, masked_ref = (float(np.mean(sums[k])) for k in ("knn", "energy", "masked"))
    per_knn_energy = float(np.mean([a + b_ for a, b_ in zip(sums["knn"], sums["energy"])]))

    def baseline(name):
        return mean_errors(setup(name)[1].baseline_errors(b))

    assert baseline("knn") == {"val_baseline_mse": pytest.approx(knn, rel=1e-5)}
    assert baseline("masked") == {"val_baseline_mse": pytest.approx(masked_ref, rel=1e-5)}
    assert baseline("hybrid") == {"val_baseline_mse": pytest.approx(knn, rel=1e-5),
                                  "val_masked_baseline_mse": pytest.approx(masked_ref, rel=1e-5)}
    assert baseline("knn_energy") == {"val_baseline_mse": pytest.approx(per_knn_energy, rel=1e-5),
                                      "val_knn_baseline_mse": pytest.approx(knn, rel=1e-5)}
    assert baseline("supervised") == {
        "val_baseline_mse": pytest.approx(float(np.mean(sums["labels"])), rel=1e-5)}
    # validation batches events in any grouping: the same numbers
    got = evaluate(None, setup("masked")[1], events, 2, 0, 1, "cpu", nullcontext, baseline=True)
    assert got == {"val_baseline_mse": pytest.approx(masked_ref, rel=1e-5)}


# ---------------------------------------------------------------------- the record

@pytest.mark.parametrize("name", NAMES)
def test_objective_round_trips_through_the_checkpoint_record(name, tmp_path):
    from fm4npp.downstream.features import load_backbone
    from fm4npp.pretrain.loop import _save_checkpoint

    cfg, obj, model = setup(name, mask_fraction=0.6, hybrid_weight=0.25,
                            bidirectional=name in ("masked", "supervised"))
    record = obj.record()
    assert record["name"] == name and json.loads(json.dumps(record)) == record
    assert objective_from_record(record).record() == record
    if name in ("masked", "hybrid"):
        assert record["mask_fraction"] == 0.6
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cfg_dict = {**cfg.to_dict(), "bins": "bins.json", "run_name": "r"}
    d = _save_checkpoint(model, opt, sched, 3, cfg_dict, "h" * 64, {"counters": {}},
                         {"order": "raster", "max_points": 100, "k": K}, record, final=True)
    try:
        for where in (d, f"{d}/pretrained"):  # both checkpoint layouts
            loaded, extra = load_backbone(where)
            assert extra["objective"] == record
            assert objective_from_record(extra["objective"]).name == name
            assert loaded.cfg.bidirectional == (name in ("masked", "supervised"))
            assert set(loaded.cfg.output_heads) == set(obj.output_heads(K))
    finally:
        shutil.rmtree(d)
    assert set(OBJECTIVES) == set(NAMES)


def test_serialization_adds_the_neighbours_energies():
    from fm4npp.serialize import events as ev_mod
    from fm4npp.serialize.bins import fit_bins
    from fm4npp.serialize.config import SerializeConfig
    from fm4npp.serialize.knn import next_neighbors

    rng = np.random.default_rng(1)
    evs = [ev_mod.toy_event(rng, i, max_tracks=10, noise_hits=5) for i in range(8)]
    cfg = SerializeConfig(k=K)
    bins = fit_bins(evs, cfg, source="toy")
    crop = SerializeConfig(k=K, max_points=40, cap_policy="crop")
    for e in evs:
        out = ev_mod.serialize_event(e, bins, cfg)
        idx, _ = next_neighbors(out["coords"], K)
        m = out["target_mask"]
        assert out["target_energy"].shape == m.shape and out["target_energy"].dtype == np.float32
        np.testing.assert_array_equal(out["target_energy"][m], out["energy"][idx[m]])
        assert (out["target_energy"][~m] == 0).all()
        cut = ev_mod.serialize_event(e, bins, crop)  # cropped after the targets: the same ones
        np.testing.assert_array_equal(cut["target_energy"], out["target_energy"][:40])


@pytest.mark.slow
def test_masked_bidirectional_run_on_two_ray_workers(tmp_path, monkeypatch):
    """The Ray Train path with a non-kNN objective: DDP over 2 workers with the unused kNN
    head, the objective in the checkpoint record and in MLflow."""
    ray = pytest.importorskip("ray")
    from conftest import make_event_table

    from fm4npp import runs
    from fm4npp.data.convert import write_dataset
    from fm4npp.data.io import read_events
    from fm4npp.downstream.features import load_backbone
    from fm4npp.pretrain.run import run_pretraining
    from fm4npp.serialize.bins import fit_bins, save_bins
    from fm4npp.serialize.config import SerializeConfig

    data = tmp_path / "events"
    write_dataset([make_event_table(40, 1, max_tracks=4)], data)
    save_bins(fit_bins(read_events(data), SerializeConfig(k=K, n_difficulty_bins=3)), data / "bins.json")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = PretrainConfig(preset="w8", n_layers=1, data=str(data), steps=2, warmup=1, lr=3e-3,
                             batch_size=4, workers=2, log_every=1, val_every=2, ckpt_every=2,
                             val_events=8, storage_path=str(tmp_path / "runs"), experiment="test",
                             max_failures=0, objective="masked", bidirectional=True)
        out = run_pretraining(cfg)
    finally:
        if started:
            ray.shutdown()
    assert out["steps"] == 2 and np.isfinite(out["val_mse"]) and out["val_baseline_mse"] > 0
    model, extra = load_backbone(out["pretrained"])
    assert extra["objective"] == {"name": "masked", "mask_fraction": 0.3}
    assert model.cfg.bidirectional and model.cfg.mask_token
    run = runs.client().get_run(out["mlflow_run_id"])
    assert run.data.tags["objective"] == "masked" and run.data.tags["bidirectional"] == "true"
    assert run.data.tags["fm4npp.pretraining_claim"] == "true"
    assert {"train_masked_coord", "train_masked_energy", "val_mse", "val_baseline_mse"} <= set(run.data.metrics)


def test_init_from_another_objectives_model_is_refused_by_name(tmp_path):
    """Continued pretraining loads weights strictly: a knn checkpoint has no masked-point head
    or mask token, so starting a masked run from it is refused with both objectives named."""
    from safetensors.torch import save_file

    from fm4npp.pretrain.checkpoint import MODEL_FILE
    from fm4npp.pretrain.loop import _load_init_weights

    knn_cfg = PretrainConfig(preset="w8", objective="knn")
    masked_cfg = PretrainConfig(preset="w8", objective="masked")
    knn_model = FM4NPP(model_config_for(knn_cfg, k=3))
    save_file({k: v.contiguous() for k, v in knn_model.state_dict().items()}, str(tmp_path / MODEL_FILE))
    again = FM4NPP(model_config_for(knn_cfg, k=3))
    _load_init_weights(again, str(tmp_path), {"name": "knn"}, {"name": "knn"})
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                  knn_model.state_dict().values()))
    with pytest.raises(ValueError, match=r"objective \{'name': 'knn'\}.*objective \{'name': 'masked'\}.*missing"):
        _load_init_weights(FM4NPP(model_config_for(masked_cfg, k=3)), str(tmp_path),
                           {"name": "knn"}, {"name": "masked"})
