"""Typed configuration of serialization (issue 3) and of the data pipeline feeding training.

Defaults live here and only here. Everything *fitted* (bin edges, energy constants, difficulty
weights, the resolved normalisation ranges) lives in the bins file instead
(`fm4npp.serialize.bins`), whose content hash identifies a serialization.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from fm4npp.sim.config import DEFAULT_DETECTOR  # plain dataclasses: no PYTHIA at import

ORDERS = ("raster", "radial", "zorder", "hilbert", "random")
BOX_ORDERS = ("r_phi_eta", "r_eta_phi")
CAP_POLICIES = ("drop", "crop")
ENERGY_TRANSFORMS = ("log", "linear")


@dataclass
class SerializeConfig:
    """How one event becomes a sequence with k-next-nearest-neighbour targets."""

    k: int = 10  # neighbours predicted per point (paper 10, public code 30)
    order: str = "raster"  # one of ORDERS; raster = the paper's hierarchical raster scan
    box_order: str = "r_phi_eta"  # lexicographic key of box centres (paper: (r, phi, eta))
    n_bins: tuple[int, int, int] = (6, 8, 8)  # raster grid along (r, eta, phi); r: 2 per module
    periodic_phi: bool = False  # kNN distance wraps phi (normalised period 1)
    detector: str = DEFAULT_DETECTOR  # name or file in fm4npp.sim.geometry (layer radii, modules)
    eta_range: tuple[float, float] = (-2.0, 2.0)  # min-max normalisation range (paper)
    phi_range: tuple[float, float] = (-math.pi, math.pi)  # [rad] (paper)
    r_range_cm: tuple[float, float] | None = None  # None: the detector's module extent [cm]
    snap_r_tol_cm: float = 0.05  # snap r to the layer radius within this [cm]; 0 disables
    energy_transform: str = "log"  # "log": standardise log1p(E); "linear": standardise E
    # Cap on points per event (public loader drops > 3200); 0: none. Silicon hits count like
    # any other: an sPHENIX event has ~7 more per track than its TPC alone.
    max_points: int = 3200
    cap_policy: str = "drop"  # "drop" the event or "crop" it to the first max_points (innermost)
    n_difficulty_bins: int = 10  # equal-frequency bins of the event's mean kNN distance
    fit_events: int = 2000  # events read by `fit` (train split only)
    seed: int = 0  # seeds the random order (mixed with the event id)

    def __post_init__(self) -> None:
        self.n_bins = tuple(int(n) for n in self.n_bins)
        self.eta_range = tuple(float(v) for v in self.eta_range)
        self.phi_range = tuple(float(v) for v in self.phi_range)
        if self.r_range_cm is not None:
            self.r_range_cm = tuple(float(v) for v in self.r_range_cm)
        if self.order not in ORDERS:
            raise ValueError(f"SerializeConfig.order={self.order!r}; expected one of {ORDERS}")
        if self.box_order not in BOX_ORDERS:
            raise ValueError(f"SerializeConfig.box_order={self.box_order!r}; expected {BOX_ORDERS}")
        if self.cap_policy not in CAP_POLICIES:
            raise ValueError(f"SerializeConfig.cap_policy={self.cap_policy!r}; expected {CAP_POLICIES}")
        if self.energy_transform not in ENERGY_TRANSFORMS:
            raise ValueError(
                f"SerializeConfig.energy_transform={self.energy_transform!r}; expected {ENERGY_TRANSFORMS}"
            )
        if self.k < 1:
            raise ValueError(f"SerializeConfig.k must be >= 1, got {self.k}")
        if len(self.n_bins) != 3 or min(self.n_bins) < 1:
            raise ValueError(f"SerializeConfig.n_bins must be 3 positive ints, got {self.n_bins}")

    def to_dict(self) -> dict:
        return asdict(self)


# The keep/drop rule of an event by its point count, spelled once: serialization, bin fitting,
# the pipeline's policy counts and the studies' training-set sizes must agree on which events
# (and how many of their points) training sees.
MIN_POINTS = 2  # an event needs a neighbour to predict


def over_cap(n_points, cfg: SerializeConfig) -> np.ndarray:
    """Which events (each of >= MIN_POINTS points) exceed ``cfg.max_points``: dropped or
    cropped, by ``cfg.cap_policy``. Works on a count or an array of counts."""
    n = np.asarray(n_points)
    return (n >= MIN_POINTS) & (n > cfg.max_points) if cfg.max_points else np.zeros(n.shape, bool)


def kept_points(n_points, cfg: SerializeConfig) -> np.ndarray:
    """The points each event brings to training: 0 for an event skipped (< MIN_POINTS) or
    dropped over the cap, ``max_points`` for one cropped to it, else all of them."""
    n = np.asarray(n_points)
    capped = 0 if cfg.cap_policy == "drop" else cfg.max_points
    return np.where(n < MIN_POINTS, 0, np.where(over_cap(n, cfg), capped, n))


@dataclass
class PipelineConfig:
    """Parquet events -> serialized events -> padded torch batches (Ray Data or plain Python)."""

    serialize: SerializeConfig = field(default_factory=SerializeConfig)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test by event id
    split_salt: str = "fm4npp-split-v1"  # changing it reshuffles the split
    data_fraction: float = 1.0  # train only; nested: f1 < f2 => subset(f1) within subset(f2)
    batch_size: int = 8  # events per training batch
    shuffle_seed: int | None = 0  # None: no shuffle; else seeded local shuffle (+ epoch)
    shuffle_buffer: int = 64  # events in the local shuffle buffer
    bucket_by_length: bool = False  # sort each map chunk by length (disables row shuffle)
    drop_last: bool = False
    serialize_concurrency: int = 1  # serialization tasks at a time (TaskPoolStrategy size)
    serialize_num_cpus: float = 0.25  # fractional: leaves CPUs for Train/Tune on small machines
    read_num_cpus: float = 0.25  # per Parquet read task (Ray's default 1 can starve a 2-CPU box)
    # Parquet read tasks at a time (None: Ray decides). One task reads ~5,000 events/s, enough
    # for ~8 serialization tasks; each extra concurrent task is one more Ray worker process to start.
    read_concurrency: int | None = 1
    map_batch_size: int = 32  # events per serialization task

    def __post_init__(self) -> None:
        if isinstance(self.serialize, dict):
            self.serialize = SerializeConfig(**self.serialize)
        self.split_fractions = tuple(float(f) for f in self.split_fractions)
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or not math.isclose(
            sum(self.split_fractions), 1.0, abs_tol=1e-9
        ):
            raise ValueError(f"PipelineConfig.split_fractions must be 3 fractions summing to 1, "
                             f"got {self.split_fractions}")
        if not 0.0 < self.data_fraction <= 1.0:
            raise ValueError(f"PipelineConfig.data_fraction must be in (0, 1], got {self.data_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)
