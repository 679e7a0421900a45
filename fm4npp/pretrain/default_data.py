"""The data set a study or pretraining run uses when the user names none.

Simulated once into ``<data home>/datasets/default-<key>`` (PYTHIA 8 p+p at 200 GeV through
the sPHENIX TPC, the package's defaults), serialization bins fitted on its train split, and
reused by every later call. ``<key>`` hashes everything that decides the content (the
simulation's physics settings, event count, seed and the serialization config), so a newer
fm4npp with other defaults makes a new set instead of silently reusing an old one. A file lock
keeps two studies started at once from simulating the same set twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

from fm4npp.paths import data_home

DEFAULT_EVENTS = 600  # a 2-core study at the smoke preset sees each event ~3 times
DEFAULT_SEED = 1
BINS = "bins.json"


def _configs(events: int, seed: int):
    from fm4npp.serialize.config import SerializeConfig
    from fm4npp.sim.config import SimConfig

    return SimConfig(events=events, seed=seed), SerializeConfig()


def default_key(events: int = DEFAULT_EVENTS, seed: int = DEFAULT_SEED) -> str:
    sim, ser = _configs(events, seed)
    spec = {"sim": sim.physics_dict(), "events": events, "serialize": asdict(ser)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def default_dataset_dir(events: int = DEFAULT_EVENTS, seed: int = DEFAULT_SEED) -> Path:
    return data_home() / "datasets" / f"default-{default_key(events, seed)}"


def is_ready(path: Path) -> bool:
    from fm4npp.data.shards import read_manifest

    if not (path / BINS).is_file():
        return False
    manifest = read_manifest(path, missing_ok=True)
    return bool(manifest and manifest.get("complete"))


def ensure_default_dataset(events: int = DEFAULT_EVENTS, seed: int = DEFAULT_SEED,
                           progress: bool = True) -> Path:
    """The default data set's directory, simulating and fitting it first if needed."""
    out = default_dataset_dir(events, seed)
    if is_ready(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits here, then finds it ready
        if is_ready(out):
            return out
        from fm4npp.serialize.bins import fit_bins_from_dir, save_bins
        from fm4npp.sim.run import run_simulation

        sim, ser = _configs(events, seed)
        print(f"[fm4npp] no --data given: simulating the default data set ({events} p+p events "
              f"at 200 GeV, seed {seed}) into {out}; made once, reused afterwards",
              file=sys.stderr, flush=True)
        run_simulation(sim, out, progress=progress)  # resumes a set an earlier call left half-made
        save_bins(fit_bins_from_dir(out, ser), out / BINS)
    return out
