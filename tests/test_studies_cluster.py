"""Studies on a real local Ray cluster started by ray_cluster/local/start.sh (its own temp dir
and free ports, stopped by stop.sh): a study whose driver is killed resumes without redoing
finished trials, and the smoke study runs through `ray job submit` as CI and `make demo` do."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import fresh_mlflow_uri

from fm4npp.study.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


# What a client of the cluster takes from its cluster.env (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# keeps Ray from rewriting 127.0.0.1 to the machine's external address, where nothing listens).
CLIENT_KEYS = ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")


def _env(extra=None):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    for k in (*CLIENT_KEYS, "RAY_DASHBOARD_ADDRESS", "FM4NPP_RAY_DIR"):
        env.pop(k, None)
    return {**env, **(extra or {})}


def _live_in_session(sid: int) -> list[int]:
    """Pids of live (not zombie) processes in process group or session ``sid`` (start.sh runs
    the cluster in its own session; Ray gives each worker its own process group in it)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if sid in (int(fields[2]), int(fields[3])) and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


@pytest.fixture(scope="module")
def cluster():
    """A private local cluster: {"env": cluster.env values, "dir": its temp dir}."""
    ray_dir = tempfile.mkdtemp(prefix="fm4npp-rt-", dir="/tmp")  # short: socket path limit
    # PYTHONPATH: the trial processes import the tests' stand-in trainer (tests/fake_trainer.py)
    env = _env({"FM4NPP_RAY_DIR": ray_dir, "FM4NPP_RAY_PORT": "0",
                "FM4NPP_RAY_DASHBOARD_PORT": "0", "FM4NPP_RAY_NUM_CPUS": "2",
                "PYTHONPATH": str(ROOT), "FM4NPP_FAKE_TRIAL_SECONDS": "1"})
    subprocess.run(["bash", str(ROOT / "ray_cluster/local/start.sh")], env=env, check=True,
                   timeout=240)
    state = {}
    for line in (Path(ray_dir) / "cluster.env").read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.removeprefix("export ").split("=", 1)
            state[k] = v
    try:
        yield {"env": state, "dir": ray_dir}
    finally:
        subprocess.run(["bash", str(ROOT / "ray_cluster/local/stop.sh")], env=env, timeout=120)
        left = _live_in_session(int(state["FM4NPP_RAY_PGID"]))
        assert not left, f"processes of the test cluster left running: {left}"
        assert not (Path(ray_dir) / "cluster.env").exists()
        shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from conftest import make_event_table
    from fm4npp.data.convert import write_dataset
    from fm4npp.data.io import read_events
    from fm4npp.serialize.bins import fit_bins, save_bins
    from fm4npp.serialize.config import SerializeConfig

    d = tmp_path_factory.mktemp("events")
    write_dataset([make_event_table(20, 1, max_tracks=6),
                   make_event_table(20, 2, first_event_id=20, max_tracks=6)], d)
    save_bins(fit_bins(read_events(d), SerializeConfig()), d / "bins.json")
    return d


FAKE = "tests.fake_trainer:train"


def _starts(markers: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in markers.glob("start-*"):
        key = f.name.split(".")[0].removeprefix("start-")
        out[key] = out.get(key, 0) + 1
    return out


def _done(markers: Path) -> set[str]:
    return {f.name.split(".")[0].removeprefix("done-") for f in markers.glob("done-*")}


def test_killed_driver_resumes_without_redoing_finished_trials(cluster, data_dir, tmp_path):
    storage = tmp_path / "runs"
    markers = storage / "resume-test" / "train" / "markers"  # written by tests/fake_trainer.py
    uri = fresh_mlflow_uri(tmp_path)
    env = _env({**{k: cluster["env"][k] for k in CLIENT_KEYS},
                "MLFLOW_TRACKING_URI": uri, "FM4NPP_FAKE_TRIAL_SECONDS": "1",
                "TUNE_GLOBAL_CHECKPOINT_S": "0"})
    cmd = [sys.executable, str(ROOT / "studies/model_scaling.py"), "--preset", "smoke",
           "--seeds", "0,1", "--trainer", FAKE, "--max-concurrent", "1", "--data", str(data_dir),
           "--storage", str(storage), "--name", "resume-test"]
    log1 = open(tmp_path / "run1.log", "w")
    p = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT,
                         start_new_session=True)
    t0 = time.time()
    while not _done(markers):
        assert p.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        assert time.time() - t0 < 240, "no trial finished in time"
        time.sleep(0.5)
    time.sleep(3)  # let Tune write its experiment state after the trial's end
    done_before = _done(markers)
    os.killpg(p.pid, signal.SIGKILL)  # the driver dies mid-study
    p.wait()
    n_trials = 2 * len(PRESETS["smoke"].widths)  # x 2 seeds
    assert len(done_before) < n_trials, "the study finished before the driver was killed"

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming" in r.stdout
    starts = _starts(markers)
    assert _done(markers) == set(starts) and len(starts) == n_trials
    for key in done_before:
        assert starts[key] == 1, f"finished trial {key} was run again ({starts})"

    # MLflow: one parent with four finished children
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        from fm4npp.analysis.load import load_study, parent_run

        trials = load_study("resume-test")
        assert sorted(t.key for t in trials) == sorted(starts)
        parent = parent_run("resume-test")
        assert parent.info.status == "FINISHED"
        assert all(t.kind == "model_scaling" for t in trials)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")


def test_the_readme_command_runs_from_a_fresh_shell(cluster, tmp_path):
    """`ray job submit -- python studies/model_scaling.py`, typed in a shell that has only the
    venv activated (no FM4NPP_ or RAY_ variables, another directory): Ray's client finds the
    cluster and the token by itself, the study makes the default data set and trains the
    smoke preset, and its MLflow parent run holds every trial, nested, named and described."""
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], "LANG": "C.UTF-8"}
    script = f"source {BIN / 'activate'} && ray job submit -- python studies/model_scaling.py"
    r = subprocess.run(["bash", "-c", script], env=clean, cwd=tmp_path, capture_output=True,
                       text=True, timeout=560)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    n = len(PRESETS["smoke"].widths)
    assert f"{n}/{n} trials finished" in r.stdout

    # the job ran with the cluster's environment: its data home is this test session's
    from fm4npp.paths import default_tracking_uri
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=default_tracking_uri())
    exp = c.get_experiment_by_name("fm4npp-scaling")
    found = c.search_runs([exp.experiment_id], "tags.study = 'model_scaling-smoke'")
    parents = [run for run in found if run.data.tags.get("fm4npp.study_parent") == "1"]
    assert len(parents) == 1
    trials = [run for run in found if run.data.tags.get("mlflow.parentRunId")
              == parents[0].info.run_id]
    assert sorted(t.info.run_name for t in trials) == sorted(
        f"{w}-d100-s{PRESETS['smoke'].steps[w]}" for w in PRESETS["smoke"].widths)
    for t in trials:
        assert t.info.status == "FINISHED"
        for key in ("width", "layers", "N", "D", "steps", "seed"):
            assert key in t.data.params, (t.info.run_name, key)
        assert len(c.get_metric_history(t.info.run_id, "train_loss")) >= 10  # the loss curve
        # trained long enough to mean something: the smoke preset's promise
        assert t.data.metrics["val_mse_over_baseline"] <= 0.7, t.info.run_name


def test_study_via_ray_job_submit_with_working_dir(cluster, data_dir, tmp_path):
    """The other way in: a copy of the repository (--working-dir), explicit data, storage and
    MLflow URI. The artifacts live under the storage root, not in Ray's temporary copy."""
    storage = tmp_path / "runs"
    uri = fresh_mlflow_uri(tmp_path)
    runtime_env = json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": uri,
                                           "FM4NPP_FAKE_TRIAL_SECONDS": "1"}})
    env = _env({"RAY_AUTH_MODE": "token"})
    r = subprocess.run(
        ["ray", "job", "submit", "--address", cluster["env"]["RAY_DASHBOARD_ADDRESS"],
         "--working-dir", str(ROOT), "--runtime-env-json", runtime_env, "--",
         "python", "studies/data_scaling.py", "--trainer", FAKE, "--data", str(data_dir),
         "--storage", str(storage)],
        env=env, capture_output=True, text=True, timeout=560)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    n = len(PRESETS["smoke"].fractions)
    assert f"{n}/{n} trials finished" in r.stdout

    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    found = [run for e in c.search_experiments() for run in c.search_runs([e.experiment_id])]
    assert len(found) == n + 1  # the parent and its trials
    for run in found:
        where = Path(run.info.artifact_uri.removeprefix("file://"))
        assert where.is_relative_to(storage / "mlflow-artifacts"), where
        assert not where.is_relative_to(cluster["dir"])
