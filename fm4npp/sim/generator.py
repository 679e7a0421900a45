"""PYTHIA 8 events of a facility (fm4npp/sim/facilities/) as flat numpy arrays (pythia8mc imported lazily).

For hadron beams (``reuse_mpi_init`` in the facility file) the multiparton-interaction
initialisation (~5 s) is computed once per settings with a fixed seed, saved to a cache file
(atomic rename) and always *read* from it, so every process starts from identical tables (0.2 s)
and the same block seed gives the same events anywhere. Lepton beams initialise in a moment.
Units: GeV, GeV/c; production vertices in cm relative to the collision point.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from fm4npp.files import atomic_path
from fm4npp.sim.config import GeneratorConfig
from fm4npp.sim.facility import load_facility

MAX_PYTHIA_SEED = 900_000_000


def block_seeds(seed: int, block: int) -> tuple[int, np.random.SeedSequence]:
    """(PYTHIA seed, numpy SeedSequence) of seed block `block` of run seed `seed`."""
    ss = np.random.SeedSequence([int(seed), int(block)])
    py_seed = int(ss.generate_state(1, np.uint32)[0]) % MAX_PYTHIA_SEED + 1
    return py_seed, ss


def settings(cfg: GeneratorConfig) -> list[str]:
    """The PYTHIA settings of a run: the facility's, then cfg.extra."""
    return load_facility(cfg.facility).settings() + list(cfg.extra)


def _cache_file(cfg: GeneratorConfig) -> Path:
    import pythia8mc

    key = hashlib.sha256(("\n".join(settings(cfg)) + getattr(pythia8mc, "__version__", "")).encode()).hexdigest()[:16]
    d = Path(cfg.init_cache_dir or os.path.expanduser("~/.cache/fm4npp/pythia"))
    d.mkdir(parents=True, exist_ok=True)
    return d / f"mpi-init-{key}.dat"


def ensure_init_cache(cfg: GeneratorConfig) -> Path | None:
    """Create the MPI initialisation file for these settings if it does not exist (None: the
    facility has no MPI tables to cache)."""
    if not load_facility(cfg.facility).reuse_mpi_init:
        return None
    path = _cache_file(cfg)
    if path.exists():
        return path
    with atomic_path(path) as tmp:
        py = _pythia(cfg, ["Random:setSeed = on", "Random:seed = 1",
                           "MultipartonInteractions:reuseInit = 1", f"MultipartonInteractions:initFile = {tmp}"])
        if not py.init():
            raise RuntimeError("PYTHIA initialisation failed (settings: %s)" % settings(cfg))
    return path


def _pythia(cfg: GeneratorConfig, more: list[str]):
    """A PYTHIA instance with the run's settings and `more`; a setting PYTHIA does not know is
    a ValueError naming the facility file (PYTHIA itself would only warn)."""
    import pythia8mc

    py = pythia8mc.Pythia("", False)
    for s in settings(cfg) + more:
        if not py.readString(s):
            raise ValueError(f"{load_facility(cfg.facility).source}: PYTHIA refuses the setting {s!r}")
    return py


# settings -> this process's initialised PYTHIA, and the generator that is using it
_INITIALISED: dict[tuple, object] = {}
_OWNER: dict[tuple, "PythiaGenerator"] = {}


def _initialised(cfg: GeneratorConfig):
    """The PYTHIA instance of these settings in this process, initialised (with a fixed seed)
    the first time: init costs 0.2 s, a tenth of simulating a 1000-event shard."""
    init_file = ensure_init_cache(cfg)
    key = (tuple(settings(cfg)), str(init_file))
    if key not in _INITIALISED:
        reuse = [] if init_file is None else ["MultipartonInteractions:reuseInit = 2",
                                              f"MultipartonInteractions:initFile = {init_file}"]
        py = _pythia(cfg, ["Random:setSeed = on", "Random:seed = 1"] + reuse)
        if not py.init():
            where = f" from {init_file}; delete it to rebuild" if init_file else f" (settings: {settings(cfg)})"
            raise RuntimeError(f"PYTHIA initialisation failed{where}")
        _INITIALISED[key] = py
    return key, _INITIALISED[key]


def forget_instances() -> None:
    """Drop this process's initialised PYTHIA instances: the next generator initialises afresh,
    as in a new process (benchmarks/simulate.py times that)."""
    _INITIALISED.clear()
    _OWNER.clear()


class PythiaGenerator:
    """Events of the facility of `cfg` from PYTHIA seeded with `pythia_seed`.

    PYTHIA is initialised once per process and settings and reseeded for each generator: after
    init its events depend on the seed alone, not on the init seed nor on what it generated
    before (tests/test_facilities.py checks each facility), so a block's events are the same in
    any process. One generator per settings is live at a time; a newer one takes the instance.
    """

    def __init__(self, cfg: GeneratorConfig, pythia_seed: int):
        self.cfg = cfg
        self.facility = load_facility(cfg.facility)
        self._key, self.py = _initialised(cfg)
        self.py.rndm.init(int(pythia_seed))
        _OWNER[self._key] = self
        self._charge: dict[int, float] = {}
        self._mass: dict[int, float] = {}

    def generate(self, n_events: int) -> dict:
        """n_events events. Returns arrays over final-state charged particles and photons:
        ev, pdg, px, py, pz, vx, vy, vz (cm, from the collision point), mother (row into the
        `mothers` arrays for weak-decay daughters, else -1), and `mothers` (dict of arrays with
        the same kinematic keys: the decayed generator particle), plus q and m lookups."""
        import pythia8mc

        if _OWNER.get(self._key) is not self:
            raise RuntimeError("this PythiaGenerator's PYTHIA instance was reseeded by a newer generator of "
                               "the same settings in this process; make a new PythiaGenerator")
        py = self.py
        dmax2 = (self.cfg.primary_max_displacement_cm * 10.0) ** 2  # PYTHIA vertices are in mm
        rows = []
        mrows = []
        mkeys: dict[tuple[int, int], int] = {}
        mother = []
        # this loop runs ~130 times per event: one copy of the event record (Event.particles())
        # instead of an indexing call per particle, and the filters as local unbound methods
        P = pythia8mc.Particle
        is_final, is_charged, pid_of = P.isFinal, P.isCharged, P.id
        for i in range(n_events):
            while not py.next():
                pass
            parts = py.event.particles()
            for part in parts:
                if not is_final(part):
                    continue
                pid = pid_of(part)
                if pid != 22 and not is_charged(part):
                    continue
                xv, yv, zv = part.xProd(), part.yProd(), part.zProd()
                rows.append((i, pid, part.px(), part.py(), part.pz(), xv, yv, zv))
                if xv * xv + yv * yv + zv * zv > dmax2:
                    key = (i, part.mother1())
                    if key not in mkeys:
                        mp = parts[key[1]]
                        mkeys[key] = len(mrows)
                        mrows.append((i, mp.id(), mp.px(), mp.py(), mp.pz(), mp.xProd(), mp.yProd(), mp.zProd()))
                    mother.append(mkeys[key])
                else:
                    mother.append(-1)
        out = _columns(rows)
        out["mother"] = np.array(mother, np.int64)
        out["mothers"] = _columns(mrows)
        for d in (out, out["mothers"]):
            d["q"] = self._lookup(d["pdg"], self._charge, self.py.particleData.charge)
            d["m"] = self._lookup(d["pdg"], self._mass, self.py.particleData.m0)
        return out

    def _lookup(self, pdg, cache, fn):
        if not len(pdg):
            return np.zeros(0)
        codes, inv = np.unique(pdg, return_inverse=True)
        vals = np.array([cache.setdefault(int(c), float(fn(int(c)))) for c in codes])
        return vals[inv]


def _columns(rows) -> dict:
    a = np.array(rows, dtype=float).reshape(-1, 8)
    return dict(ev=a[:, 0].astype(np.int64), pdg=a[:, 1].astype(np.int64), px=a[:, 2], py=a[:, 3], pz=a[:, 4],
                vx=a[:, 5] * 0.1, vy=a[:, 6] * 0.1, vz=a[:, 7] * 0.1)
