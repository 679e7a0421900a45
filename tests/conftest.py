"""Shared test fixtures. Several areas add to this file: keep each helper self-contained."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_data_home():
    """Tests never write to the user's data home (~/.fm4npp): the default MLflow database,
    storage root and feature cache go to a temporary one, inherited by subprocesses."""
    saved = {k: os.environ.get(k) for k in ("FM4NPP_HOME", "FM4NPP_STORAGE")}
    home = tempfile.mkdtemp(prefix="fm4npp-home-")
    os.environ["FM4NPP_HOME"] = home
    os.environ.pop("FM4NPP_STORAGE", None)
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _ray_children() -> list[int]:
    """Pids of this process's children that are Ray's (read from /proc; [] elsewhere)."""
    me, out = str(os.getpid()), []
    for pid in (d for d in os.listdir("/proc") if d.isdigit()) if os.path.isdir("/proc") else ():
        try:
            ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == me and b"/ray/" in cmd:
            out.append(int(pid))
    return out


@pytest.fixture(autouse=True, scope="module")
def _no_ray_left_behind():
    """End what a module's local Ray left running once its fixtures shut it down: in a full
    suite at load average 8-27, `ray.shutdown()` after Ray Train runs left each session's
    gcs_server, dashboard, monitor and log monitor alive (Ray 2.60; ~330 MB and ~1 % CPU each
    session, for the rest of the suite). Run alone (load ~3) the same module left nothing."""
    import signal
    import sys

    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return
    for pid in _ray_children():  # a dead session's processes: nothing to shut down gracefully
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture(autouse=True, scope="session")
def _quick_ray_train_polls():
    """Ray Train's controller looks at its workers every 2 s, so each of the tests' few-second
    training runs waits on average about a poll at its start and at its end; 0.2 s saves
    ~3 s a run here (measured on a trivial TorchTrainer: 18 -> 14 s). Inherited by
    subprocesses and Ray workers; what the runs compute does not depend on it."""
    key = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    saved = os.environ.get(key)
    os.environ.setdefault(key, "0.2")
    yield
    if saved is None:
        os.environ.pop(key, None)


# --------------------------------------------------------------------------- MLflow stores
_MLFLOW_TEMPLATE: list[Path] = []


def fresh_mlflow_uri(directory) -> str:
    """The URI of a new, empty MLflow sqlite store at ``directory``/mlflow.db (for this
    process, its subprocesses and Ray workers alike). MLflow builds a store's tables by running
    its migrations, ~3 s a store here; they are built once per session and copied."""
    if not _MLFLOW_TEMPLATE:
        from mlflow.tracking import MlflowClient

        template = Path(tempfile.mkdtemp(prefix="fm4npp-mlflow-template-")) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _MLFLOW_TEMPLATE.append(template)
    db = Path(directory) / "mlflow.db"
    if db.exists():
        raise FileExistsError(f"{db}: a fresh MLflow store must not replace one")
    shutil.copyfile(_MLFLOW_TEMPLATE[0], db)
    return f"sqlite:///{db}"


# --------------------------------------------------------------------------- event tables
# Small synthetic events in the EVENT_SCHEMA layout, built directly with pyarrow (no
# simulator): straight-ish tracks from near the origin with one hit per TPC layer they reach.

_LAYER_RADII = np.concatenate([
    lo + (np.arange(16) + 0.5) * (hi - lo) / 16
    for lo, hi in [(31.105, 40.249), (41.153, 57.475), (58.367, 75.911)]
])
_PDGS = np.array([211, -211, 321, -321, 2212, -2212, 11, -11, 13])


def make_event_table(n_events: int, rng: np.random.Generator | int = 0, *, first_event_id: int = 0,
                     max_tracks: int = 12):
    """An EVENT_SCHEMA pyarrow Table with ``n_events`` valid, non-empty events."""
    import pyarrow as pa

    from fm4npp.data.schema import EVENT_SCHEMA, NOISE_P_MAX, SUBSYSTEM_IDS, pid_class_of

    rng = np.random.default_rng(rng)
    rows = {name: [] for name in EVENT_SCHEMA.names}
    for e in range(n_events):
        n_tracks = int(rng.integers(1, max_tracks + 1))
        track_ids = rng.permutation(np.arange(1, 3 * n_tracks + 1))[:n_tracks].astype(np.int32)
        pdg = rng.choice(_PDGS, n_tracks).astype(np.int32)
        pt = rng.exponential(0.4, n_tracks) + 0.05
        phi0 = rng.uniform(-np.pi, np.pi, n_tracks)
        eta = rng.uniform(-1.0, 1.0, n_tracks)
        vz = rng.normal(0.0, 10.0, n_tracks)
        px, py, pz = pt * np.cos(phi0), pt * np.sin(phi0), pt * np.sinh(eta)
        tracks, hits = [], {k: [] for k in EVENT_SCHEMA.names if k.startswith("hit_")}
        for t in range(n_tracks):
            n_layers = int(rng.integers(1, 49))
            r = _LAYER_RADII[:n_layers]
            phi = phi0[t] + rng.normal(0, 0.002, n_layers)
            hits["hit_x"].append(r * np.cos(phi))
            hits["hit_y"].append(r * np.sin(phi))
            hits["hit_z"].append(vz[t] + r * np.sinh(eta[t]))
            hits["hit_energy"].append(rng.lognormal(5.3, 0.4, n_layers))
            hits["hit_track_id"].append(np.full(n_layers, track_ids[t]))
            hits["hit_pdg"].append(np.full(n_layers, pdg[t]))
            hits["hit_pid_class"].append(pid_class_of(np.full(n_layers, pdg[t])))
            p = np.sqrt(px[t] ** 2 + py[t] ** 2 + pz[t] ** 2)
            hits["hit_noise"].append(np.full(n_layers, p < NOISE_P_MAX))
            hits["hit_subsystem"].append(np.full(n_layers, SUBSYSTEM_IDS["tpc"]))
            hits["hit_sigma_rphi"].append(np.full(n_layers, 0.015))  # cm, TPC-like
            hits["hit_sigma_z"].append(np.full(n_layers, 0.05))
            tracks.append({
                "track_id": int(track_ids[t]), "pdg": int(pdg[t]), "charge": int(np.sign(pdg[t])) or 1,
                "px": px[t], "py": py[t], "pz": pz[t], "vx": 0.0, "vy": 0.0, "vz": vz[t],
                "parent_id": -1, "is_primary": True,
            })
        rows["event_id"].append(first_event_id + e)
        for k, v in hits.items():
            rows[k].append(np.concatenate(v).tolist())
        rows["tracks"].append(tracks)
    return pa.Table.from_pydict(rows, schema=EVENT_SCHEMA)


@pytest.fixture
def event_table_factory():
    """``make_event_table`` as a fixture (for tests that prefer fixtures to imports)."""
    return make_event_table


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny model tests run on one thread: the shared 2-core machine is often oversubscribed,
    and OpenMP with 2 threads then stalls on every small op."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
