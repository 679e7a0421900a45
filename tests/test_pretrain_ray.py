"""Pretraining end to end on a local Ray: DDP equivalence, exact resume, a killed worker
replaced, metrics read back through MLflow, and refused inputs. Tiny model, ~50 small events."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import fresh_mlflow_uri, make_event_table

ROOT = Path(__file__).resolve().parents[1]
FAULT = "tests.fault_injection:kill_rank0_once_at_step_4"

pytestmark = pytest.mark.slow

STEPS = 6


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small data set with fitted serialization bins at <dir>/bins.json."""
    from fm4npp.data.convert import write_dataset
    from fm4npp.data.io import read_events
    from fm4npp.serialize.bins import fit_bins, save_bins
    from fm4npp.serialize.config import SerializeConfig

    d = tmp_path_factory.mktemp("events")
    write_dataset([make_event_table(30, 1, max_tracks=4),
                   make_event_table(30, 2, first_event_id=30, max_tracks=4)], d)
    save_bins(fit_bins(read_events(d), SerializeConfig(k=4, n_difficulty_bins=3)), d / "bins.json")
    return d


@pytest.fixture(scope="module")
def ray_local():
    import ray

    # PYTHONPATH: the workers import the tests' fault injection (tests/fault_injection.py)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


@pytest.fixture
def mlflow_db(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))


@pytest.fixture(scope="module")
def shared(ray_local, data_dir, tmp_path_factory):
    """Serialized datasets built once, and the uninterrupted 1-worker reference run."""
    import os

    from fm4npp.pretrain.run import build_datasets, run_pretraining

    tmp = tmp_path_factory.mktemp("ref")
    os.environ["MLFLOW_TRACKING_URI"] = fresh_mlflow_uri(tmp)
    try:
        cfg = _cfg(data_dir, tmp, run_name="ref")
        ds = build_datasets(cfg.resolved())
        ref = run_pretraining(cfg, datasets=ds)
        yield {"datasets": ds, "ref": ref, "curve": _curve(ref["mlflow_run_id"]),
               "uri": os.environ["MLFLOW_TRACKING_URI"], "tmp": tmp}
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def _cfg(data_dir, tmp_path, **kw):
    from fm4npp.pretrain.config import PretrainConfig

    base = dict(preset="w16", n_layers=1, data=str(data_dir), steps=STEPS, warmup=2, lr=3e-3,
                batch_size=4, log_every=1, val_every=3, ckpt_every=3, val_events=8,
                storage_path=str(tmp_path / "runs"), experiment="test", max_failures=0)
    return PretrainConfig(**{**base, **kw})


def _curve(run_id, key="train_loss"):
    from fm4npp import runs

    return np.array([v for _, v in runs.metric_history(run_id, key)])


def test_ddp_two_workers_match_one(shared, data_dir):
    from fm4npp import runs
    from fm4npp.pretrain.run import run_pretraining

    one = shared["ref"]
    two = run_pretraining(_cfg(data_dir, shared["tmp"], run_name="w2", workers=2),
                          datasets=shared["datasets"])
    a, b = shared["curve"], _curve(two["mlflow_run_id"])
    assert len(a) == len(b) == STEPS
    # same events per step whatever the world size; DDP averages equal local means
    np.testing.assert_allclose(a, b, rtol=2e-4)
    assert two["val_mse"] == pytest.approx(one["val_mse"], rel=2e-4)
    assert one["D"] == two["D"] > 0 and one["N"] > 0 and one["C"] > 0

    # the final model loads for downstream use, with the bins hash it needs
    from fm4npp.model.io import from_pretrained

    model, extra = from_pretrained(one["pretrained"])
    assert extra["bins_hash"] == runs.client().get_run(one["mlflow_run_id"]).data.params["bins_hash"]
    assert model.num_params() == one["N"]

    # the metrics, params and artifacts are readable back through the MLflow client
    run = runs.client().get_run(one["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["preset"] == "w16" and run.data.params["batch_size"] == "4"
    for key in ("train_loss", "val_mse", "lr", "grad_norm", "events", "spacepoints_D",
                "flops_C", "params_N", "tokens_per_s", "val_baseline_mse"):
        assert key in run.data.metrics, key
    for key in ("val_mse", "val_baseline_mse"):
        assert [s for s, _ in runs.metric_history(run.info.run_id, key)] == [3, 6], key
    arts = {a.path for a in runs.client().list_artifacts(run.info.run_id)}
    assert {"loss_curve.png", "run_spec.json"} <= arts
    # the run's spec, as logged and as read back from its checkpoint, is the one it ran
    from fm4npp.spec import RunSpec, from_checkpoint

    logged = runs.client().download_artifacts(run.info.run_id, "run_spec.json", str(shared["tmp"]))
    assert RunSpec.from_dict(json.loads(Path(logged).read_text())) == from_checkpoint(one["pretrained"])


def test_resume_and_killed_worker_match_uninterrupted(shared, data_dir):
    from fm4npp.pretrain.run import run_pretraining

    ref, want, tmp, ds = shared["ref"], shared["curve"], shared["tmp"], shared["datasets"]

    # a worker SIGKILLs itself at step 4: Ray replaces it, it resumes from the step-3 checkpoint
    auto = run_pretraining(_cfg(data_dir, tmp, run_name="auto", step_hook=FAULT,
                                max_failures=1), datasets=ds)
    assert auto["steps"] == STEPS
    np.testing.assert_allclose(_curve(auto["mlflow_run_id"]), want, rtol=1e-6)
    assert _curve(auto["mlflow_run_id"], "resumed_at_step").tolist() == [3]

    # without retries the run fails; starting it again under the same name resumes exactly
    cfg = _cfg(data_dir, tmp, run_name="again", step_hook=FAULT)
    with pytest.raises(pytest.importorskip("ray.train").TrainingFailedError):  # the killed worker, no retry
        run_pretraining(cfg, datasets=ds)
    again = run_pretraining(cfg, datasets=ds)
    assert again["mlflow_run_id"] != ref["mlflow_run_id"]
    np.testing.assert_allclose(_curve(again["mlflow_run_id"]), want, rtol=1e-6)
    assert again["val_mse"] == pytest.approx(ref["val_mse"], rel=1e-6)


def test_continued_pretraining_starts_from_the_weights(shared, data_dir):
    from fm4npp.pretrain.run import run_pretraining

    ref, tmp = shared["ref"], shared["tmp"]
    more = run_pretraining(_cfg(data_dir, tmp, run_name="more", steps=2, init_from=ref["checkpoint"]),
                           datasets=shared["datasets"])
    # the first step already sees the trained model: far below the fresh run's first loss
    first = _curve(more["mlflow_run_id"])[0]
    assert first < 0.5 * shared["curve"][0]
    assert more["steps"] == 2 and more["D"] > ref["D"] and more["C"] > ref["C"]  # totals carry over
    with pytest.raises(ValueError, match="init_from"):
        _cfg(data_dir, tmp, init_from=str(tmp)).resolved()


def test_refuses_missing_or_changed_bins(data_dir, tmp_path, mlflow_db):
    import shutil

    from fm4npp.pretrain.run import RefusedError, run_pretraining

    no_bins = tmp_path / "nobins"
    shutil.copytree(data_dir, no_bins, ignore=shutil.ignore_patterns("bins.json"))
    with pytest.raises(RefusedError, match="no serialization bins"):
        run_pretraining(_cfg(no_bins, tmp_path, run_name="x"))

    run_dir = tmp_path / "runs" / "y"
    run_dir.mkdir(parents=True)
    (run_dir / "fm4npp_run.json").write_text(json.dumps({"bins_hash": "0" * 64}))
    with pytest.raises(RefusedError, match="refusing to resume"):
        run_pretraining(_cfg(data_dir, tmp_path, run_name="y"))


def test_stream_mode_splits_data_and_recovers(shared, data_dir):
    """Data larger than memory: each worker streams its split; a killed worker's replacement
    skips the batches consumed before the checkpoint and the run finishes."""
    from fm4npp.pretrain.run import RefusedError, build_datasets, run_pretraining

    with pytest.raises(RefusedError, match="needs 2.25 CPUs"):  # would wait forever on 2 CPUs
        run_pretraining(_cfg(data_dir, shared["tmp"], run_name="s0", data_mode="stream",
                             workers=2), datasets={})
    cfg = _cfg(data_dir, shared["tmp"], run_name="stream", data_mode="stream", workers=2,
               cpus_per_worker=0.25, steps=4, ckpt_every=2, val_every=4,
               step_hook="tests.fault_injection:kill_rank0_once_at_step_3", max_failures=1)
    out = run_pretraining(cfg, datasets=build_datasets(cfg.resolved()))
    assert out["steps"] == 4 and out["events"] == 4 * cfg.batch_size
    assert np.isfinite(out["val_mse"]) and out["D"] > 0
    assert _curve(out["mlflow_run_id"], "resumed_at_step").tolist() == [2]


def test_checkpoint_records_the_serialization_and_finetune_uses_it(ray_local, data_dir, tmp_path,
                                                                   mlflow_db):
    """A run pretrained with a non-default order and point cap: both checkpoint layouts carry
    the whole serialization, and the downstream serializes its events the same way."""
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.downstream.features import load_backbone
    from fm4npp.downstream.splits import load_split, serialization
    from fm4npp.pretrain.run import run_pretraining

    out = run_pretraining(_cfg(data_dir, tmp_path, run_name="radial", steps=1, order="radial",
                               max_points=150, val_every=1, ckpt_every=1))
    cfg = FinetuneConfig(task="pid", source="raw", data=str(data_dir))
    for where in (out["pretrained"], out["checkpoint"]):
        _, extra = load_backbone(where)
        assert extra["serialize"]["order"] == extra["order"] == "radial"
        assert extra["serialize"]["k"] == 4 and extra["max_points"] == 150
        scfg, _ = serialization(cfg, extra)
        assert (scfg.order, scfg.max_points, scfg.k) == ("radial", 150, 4)
    events = load_split(cfg, "train", extra=extra)
    assert events and all(len(e["energy"]) <= 150 for e in events)
    assert all(np.all(np.diff(e["coords"][:, 0]) >= 0) for e in events)  # radial: outward in r
    raster = load_split(cfg, "train")  # without the record: the default raster scan
    assert not all(np.all(np.diff(e["coords"][:, 0]) >= 0) for e in raster)
