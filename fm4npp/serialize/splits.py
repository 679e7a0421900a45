"""Which split an event belongs to, and the raw events of one split.

Splits are a pure function of the event id: u = hash(salt, event_id) in [0, 1) picks train /
val / test by the configured fractions. The data fraction (train only) keeps events whose
second, independent hash v(event_id) < f, so a smaller fraction is always a subset of a larger.

This sits in the serialize layer (it reads `PipelineConfig` fields and the checked reader of
``fm4npp.data.io``) so that both the bins fit (``fm4npp.serialize.bins``) and the data pipeline
(``fm4npp.data.pipeline``, which re-exports these names) use it without importing each other.
"""

from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "val", "test")
READ_COLUMNS = ["event_id", "hit_x", "hit_y", "hit_z", "hit_energy", "hit_track_id", "hit_pid_class", "hit_noise",
                "hit_subsystem", "hit_sigma_z"]


def _salt64(salt: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little"))


def event_uniform(event_ids, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per event id: splitmix64(event_id xor salt), top 53 bits."""
    z = np.asarray(event_ids, dtype=np.int64).astype(np.uint64) ^ _salt64(salt)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_of(event_ids, cfg) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) per event id (`cfg`: a PipelineConfig)."""
    u = event_uniform(event_ids, cfg.split_salt)
    cuts = np.cumsum(cfg.split_fractions)[:-1]
    return np.searchsorted(cuts, u, side="right")


def in_fraction(event_ids, fraction: float, salt: str) -> np.ndarray:
    return event_uniform(event_ids, salt + "/fraction") < fraction


def keep_mask(event_ids, split: str, cfg) -> np.ndarray:
    """Events of `split` (the data fraction applies to the train split only)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    mask = split_of(event_ids, cfg) == SPLITS.index(split)
    if split == "train" and cfg.data_fraction < 1.0:
        mask &= in_fraction(event_ids, cfg.data_fraction, cfg.split_salt)
    return mask


def iter_split_events(data_dir, split: str, cfg, columns=READ_COLUMNS, check: bool = True):
    """Raw events (dicts of numpy arrays, fm4npp.data.io layout) of one split, in file order."""
    import pyarrow as pa

    from fm4npp.data.io import iter_tables, table_to_events

    for _, _, table in iter_tables(data_dir, columns, check=check, empty="keep"):
        ids = table.column("event_id").to_numpy()
        mask = keep_mask(ids, split, cfg)
        if mask.any():
            yield from table_to_events(table.filter(pa.array(mask)))
