"""The data set a study or pretraining run uses when the user names none.

Simulated once into ``<data home>/datasets/default-<key>`` (PYTHIA 8 p+p at 200 GeV through
the sPHENIX TPC, the package's defaults; another detector and facility, as the transfer study
asks for, go to ``<detector>-<facility>-<key>``), serialization bins fitted on its train split,
and reused by every later call. ``<key>`` hashes everything that decides the content (the
simulation's physics settings, event count, seed and the serialization config), so a newer
fm4npp with other defaults makes a new set instead of silently reusing an old one. A file lock
keeps two studies started at once from simulating the same set twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from fm4npp.paths import data_home
from fm4npp.sim.config import DEFAULT_DETECTOR, DEFAULT_FACILITY

DEFAULT_EVENTS = 600  # a 2-core study at the smoke preset sees each event ~3 times
DEFAULT_SEED = 1
BINS = "bins.json"


def _configs(events: int, seed: int, detector: str = "", facility: str = ""):
    from fm4npp.serialize.config import SerializeConfig
    from fm4npp.sim.config import SimConfig

    sim = SimConfig(events=events, seed=seed)
    if detector:
        sim = replace(sim, detector=detector)
    if facility:
        sim = replace(sim, generator=replace(sim.generator, facility=facility))
    return sim, SerializeConfig(detector=sim.detector)


def default_key(events: int = DEFAULT_EVENTS, seed: int = DEFAULT_SEED, detector: str = "",
                facility: str = "") -> str:
    sim, ser = _configs(events, seed, detector, facility)
    spec = {"sim": sim.physics_dict(), "events": events, "serialize": asdict(ser)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def default_dataset_dir(events: int = DEFAULT_EVENTS, seed: int = DEFAULT_SEED, detector: str = "",
                        facility: str = "") -> Path:
    sim, _ = _configs(events, seed, detector, facility)
    key = default_key(events, seed, detector, facility)
    if (sim.detector, sim.generator.facility) == (DEFAULT_DETECTOR, DEFAULT_FACILITY):
        return data_home() / "datasets" / f"default-{key}"
    return data_home() / "datasets" / f"{sim.detector}-{sim.generator.facility}-{key}"


def is_ready(path: Path) -> bool:
    from fm4npp.data.shards import read_manifest

    if not (path / BINS).is_file():
        return False
    manifest = read_manifest(path, missing_ok=True)
    return bool(manifest and manifest.get("complete"))


def ensure_default_dataset(events: int = DEFAULT_EVENTS, seed: int = DEFAULT_SEED,
                           progress: bool = True, detector: str = "", facility: str = "") -> Path:
    """The default data set's directory (of ``detector`` at ``facility``, names as
    ``fm4npp simulate`` takes them; "" = the package's), simulated and fitted first if needed."""
    out = default_dataset_dir(events, seed, detector, facility)
    if is_ready(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits here, then finds it ready
        if is_ready(out):
            return out
        from fm4npp.serialize.bins import fit_bins_from_dir, save_bins
        from fm4npp.sim.run import run_simulation

        sim, ser = _configs(events, seed, detector, facility)
        print(f"[fm4npp] no --data given: simulating the default data set ({events} events, "
              f"{sim.generator.facility} through {sim.detector}, seed {seed}) into {out}; made "
              f"once, reused afterwards",
              file=sys.stderr, flush=True)
        run_simulation(sim, out, progress=progress)  # resumes a set an earlier call left half-made
        save_bins(fit_bins_from_dir(out, ser), out / BINS)
    return out
