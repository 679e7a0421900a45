"""Checkpoints are read without running code; a training state round-trips exactly; outputs
land under the storage root the user names."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fm4npp import paths, runs
from fm4npp.files import BadFileError
from fm4npp.pretrain import checkpoint
from fm4npp.pretrain.checkpoint import CheckpointError, load_train_state, save_train_state
from conftest import fresh_mlflow_uri


class _Payload:
    """A pickle that, when unpickled, creates the file named by ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _tiny_model():
    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.presets import get_preset

    torch.manual_seed(0)
    return FM4NPP(get_preset("w8"))


def _train_checkpoint(d: Path, model) -> None:
    from safetensors.torch import save_file

    from fm4npp.pretrain.config import PretrainConfig

    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / checkpoint.MODEL_FILE))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_train_state(d, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 3,
                         "config": PretrainConfig(preset="w8").to_dict(), "bins_hash": "abc"})


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    from fm4npp.downstream.features import load_backbone

    marker = tmp_path / "pwned"
    pickle.dumps(_Payload(marker))  # sanity: the payload is a valid pickle
    with open(tmp_path / "probe.pkl", "wb") as f:
        pickle.dump(_Payload(marker), f)
    pickle.load(open(tmp_path / "probe.pkl", "rb"))
    assert marker.exists(), "the probe pickle must really execute when unpickled"
    marker.unlink()

    ckpt = tmp_path / "ckpt"
    _train_checkpoint(ckpt, _tiny_model())
    # the old layout: a pickled train_state.pt next to real weights
    (ckpt / checkpoint.STATE_JSON).unlink()
    (ckpt / checkpoint.STATE_TENSORS).unlink()
    with open(ckpt / checkpoint.LEGACY_STATE_FILE, "wb") as f:
        pickle.dump({"config": _Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="does not unpickle"):
        load_train_state(ckpt)
    with pytest.raises(CheckpointError, match="does not unpickle"):
        load_backbone(ckpt)
    # the payload in place of the tensor file of the new layout
    _train_checkpoint(ckpt, _tiny_model())
    with open(ckpt / checkpoint.STATE_TENSORS, "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(BadFileError, match="train_state.safetensors"):
        load_train_state(ckpt)
    assert not marker.exists()


def test_random_bytes_as_weights_name_the_file(tmp_path):
    from fm4npp.model.io import WEIGHTS_FILE, from_pretrained, save_pretrained

    d = save_pretrained(_tiny_model(), tmp_path / "pre")
    (d / WEIGHTS_FILE).write_bytes(os.urandom(256))
    with pytest.raises(BadFileError, match=r"model\.safetensors: not a readable safetensors"):
        from_pretrained(d)


def test_train_state_round_trip_resumes_exactly(tmp_path):
    """Optimizer, scheduler and all three RNGs restored from the files continue exactly as
    the uninterrupted objects do."""
    from fm4npp.model.schedule import warmup_cosine
    from fm4npp.pretrain.loop import _rng_state, _set_rng_state

    def make():
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        opt = torch.optim.AdamW([{"params": model[0].parameters(), "lr": 1e-2},
                                 {"params": model[2].parameters(), "lr": 5e-3}], weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 2, 10))
        return model, opt, sched

    def step(model, opt, sched):
        x = torch.randn(16, 4) + float(np.random.normal()) + random.random()
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach())

    model, opt, sched = make()
    for _ in range(3):
        step(model, opt, sched)
    save_train_state(tmp_path, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                "rng": _rng_state(), "step": 3, "counters": {"flops_C": 1.5e12},
                                "data_position": {"epoch": 1, "index": 7}})
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    reference = [step(model, opt, sched) for _ in range(4)]

    state = load_train_state(tmp_path)
    model2, opt2, sched2 = make()
    model2.load_state_dict(weights)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    assert [step(model2, opt2, sched2) for _ in range(4)] == reference
    assert state["step"] == 3 and state["counters"] == {"flops_C": 1.5e12}
    assert state["data_position"] == {"epoch": 1, "index": 7}
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_storage_root_precedence(monkeypatch, tmp_path):
    from fm4npp.pretrain.config import PretrainConfig

    monkeypatch.setenv("FM4NPP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FM4NPP_STORAGE", raising=False)
    assert paths.storage_root() == tmp_path / "home" / "runs"
    monkeypatch.setenv("FM4NPP_STORAGE", str(tmp_path / "env"))
    assert paths.storage_root() == tmp_path / "env"
    assert paths.storage_root(tmp_path / "flag") == tmp_path / "flag"
    cfg = PretrainConfig(preset="w8", data=str(tmp_path)).resolved()
    assert cfg.storage_path == str(tmp_path / "env")  # FM4NPP_STORAGE, not the source tree
    cfg = PretrainConfig(preset="w8", data=str(tmp_path), storage_path=str(tmp_path / "f")).resolved()
    assert cfg.storage_path == str(tmp_path / "f")


def test_experiment_artifacts_live_under_the_storage_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    monkeypatch.chdir(tmp_path)
    run_id = runs.start_run("r", experiment="exp one", storage=tmp_path / "store")
    runs.log_dict(run_id, {"a": 1}, "x.json")
    exp = runs.client().get_experiment_by_name("exp one")
    assert exp.artifact_location == (tmp_path / "store" / "mlflow-artifacts" / "exp_one").as_uri()
    art = runs.client().get_run(run_id).info.artifact_uri
    assert art.startswith(exp.artifact_location)
    assert (Path(art.removeprefix("file://")) / "x.json").is_file()


def test_resolve_backbone_accepts_run_names_and_run_dirs(monkeypatch, tmp_path):
    from fm4npp.downstream.features import resolve_backbone
    from fm4npp.model.io import save_pretrained

    monkeypatch.setenv("FM4NPP_STORAGE", str(tmp_path))
    run = tmp_path / "pretrain-w8-abc"
    old = save_pretrained(_tiny_model(), run / "checkpoint_2026-12-01_10-00-00.000000" / "pretrained")
    new = save_pretrained(_tiny_model(), run / "checkpoint_2026-12-02_10-00-00.000000" / "pretrained")
    assert old != new
    # Ray Train's own file beside the checkpoints sorts after them and is not one
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    assert resolve_backbone("pretrain-w8-abc") == new
    assert resolve_backbone(run) == new
    assert resolve_backbone(new.parent) == new
    assert resolve_backbone(new) == new
    with pytest.raises(FileNotFoundError, match="nor a run of that name"):
        resolve_backbone("no-such-run")


def test_run_worse_than_baseline_warns_and_is_tagged(monkeypatch, tmp_path, caplog):
    from fm4npp.pretrain.run import judge_against_baseline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    bad, good = runs.start_run("bad", experiment="e"), runs.start_run("good", experiment="e")
    with caplog.at_level("WARNING"):
        assert judge_against_baseline(bad, "bad", {"val_mse": 0.91, "val_baseline_mse": 0.028,
                                                   "step": 5}) == pytest.approx(32.5)
    assert "WORSE than the constant predictor" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert judge_against_baseline(good, "good", {"val_mse": 0.01, "val_baseline_mse": 0.02,
                                                     "step": 5}) == pytest.approx(0.5)
    assert "WORSE" not in caplog.text
    tags = {r: runs.client().get_run(r).data.tags["fm4npp.worse_than_baseline"] for r in (bad, good)}
    assert tags == {bad: "true", good: "false"}
    assert runs.metric_history(bad, "val_mse_over_baseline") == [(5, pytest.approx(32.5))]
