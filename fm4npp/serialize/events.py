"""One Parquet event (a dict of per-hit lists) -> one serialized event (the COMMON contract).

Serialized event (points in serialized order):
  coords (N, 3) f32 normalised (r, phi, eta); energy (N,) f32 standardised;
  targets (N, k, 3) f32 next-neighbour coords (0 where missing); target_mask (N, k) bool;
  target_energy (N, k) f32 the same neighbours' standardised energies (0 where missing);
  weight f32 scalar (difficulty weight); event_id int64; order (N,) int64 original hit index;
  track_id (N,) int32; pid_class (N,) int8; noise (N,) bool; subsystem (N,) int8 (the ids of
  fm4npp.data.schema.SUBSYSTEMS; all TPC for files before schema version 3).

Several subsystems: the raster grid's r bins never straddle two modules, so the scan goes
subsystem by subsystem inside out (MVTX, INTT, TPC). Hits whose z is not measured
(hit_sigma_z = +inf) keep their stored z = 0 (eta 0) as input, are no point's kNN target and
pick their own targets by (r, phi) alone (fm4npp.serialize.knn).

Targets are computed on the whole event; with cap policy "crop" the sequence is then cut to its
first max_points (the innermost part of the raster order), keeping each point's true targets.
Also here: a small layered toy-event generator for tests and benchmarks.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from fm4npp.serialize.bins import Bins
from fm4npp.serialize.config import MIN_POINTS, SerializeConfig, kept_points, over_cap
from fm4npp.data.schema import PRE_V3_SUBSYSTEM, SUBSYSTEM_IDS, SUBSYSTEMS
from fm4npp.serialize.coords import normalised_coords, standardised_energy, z_measured
from fm4npp.serialize.knn import (gather_neighbor_values, gather_targets, mean_neighbor_distance,
                                  next_neighbors)
from fm4npp.serialize.order import serialize_order

# Counter keys, so callers can rely on them.
SEEN, KEPT, SKIPPED_FEW, DROPPED_CAP, CROPPED = (
    "events_seen", "events_serialized", "skipped_lt2_points", "dropped_over_cap", "cropped_over_cap")

_TRUTH = (("hit_track_id", "track_id", np.int32, -1), ("hit_pid_class", "pid_class", np.int8, 0),
          ("hit_noise", "noise", np.bool_, False),
          ("hit_subsystem", "subsystem", np.int8, SUBSYSTEM_IDS[PRE_V3_SUBSYSTEM]))
_PER_POINT = ("coords", "energy", "targets", "target_mask", "target_energy", "order") + tuple(t[1] for t in _TRUTH)


def check_compatible(bins: Bins, cfg: SerializeConfig) -> None:
    """The config must describe the same grid and k the bins were fitted for."""
    fitted = bins.content["config"]
    if tuple(fitted["n_bins"]) != tuple(cfg.n_bins):
        raise ValueError(f"bins {bins.hash[:12]} were fitted for n_bins={fitted['n_bins']}, config has {cfg.n_bins}")
    diff = bins.difficulty
    if diff is not None and int(diff["k"]) != cfg.k:
        raise ValueError(f"bins {bins.hash[:12]} difficulty weights were fitted for k={diff['k']}, "
                         f"config has k={cfg.k}: refit with `fm4npp serialize fit --k {cfg.k}`")


def _event_rng(cfg: SerializeConfig, event_id: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed & 0xFFFFFFFF, int(event_id) & 0xFFFFFFFFFFFFFFFF])


def serialize_event(event: dict, bins: Bins, cfg: SerializeConfig, stats: Counter | None = None) -> dict | None:
    """Serialize one event; None (and a count in `stats`) for events with < 2 points or, with
    cap policy "drop", more than cfg.max_points points. Non-finite positions raise ValueError."""
    stats = stats if stats is not None else Counter()
    stats[SEEN] += 1
    event_id = int(event["event_id"])
    x = np.asarray(event["hit_x"], dtype=np.float64)
    n = x.shape[0]
    if n < MIN_POINTS:
        stats[SKIPPED_FEW] += 1
        return None
    crop = bool(over_cap(n, cfg))
    if crop and not kept_points(n, cfg):
        stats[DROPPED_CAP] += 1
        return None
    y = np.asarray(event["hit_y"], dtype=np.float64)
    z = np.asarray(event["hit_z"], dtype=np.float64)
    if not (len(y) == len(z) == n == len(event["hit_energy"])):
        raise ValueError(f"event {event_id}: hit_x/hit_y/hit_z/hit_energy lengths differ "
                         f"({n}, {len(y)}, {len(z)}, {len(event['hit_energy'])})")
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & (np.hypot(x, y) > 0)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"event {event_id}: hit {bad} has a non-finite or on-axis position "
                         f"({x[bad]}, {y[bad]}, {z[bad]}) cm")

    coords = normalised_coords(x, y, z, bins.ranges, bins.layer_radii_cm, bins.snap_r_tol_cm)
    en = bins.energy
    energy = standardised_energy(event["hit_energy"], en["transform"], en["mean"], en["std"])
    zm = z_measured(event.get("hit_sigma_z"), n)
    perm = serialize_order(coords, cfg.order, bins, _event_rng(cfg, event_id) if cfg.order == "random" else None,
                           cfg.box_order)
    coords = coords[perm]
    idx, sq_dist = next_neighbors(coords, cfg.k, cfg.periodic_phi, zm[perm])
    targets, target_mask = gather_targets(coords, idx)
    mean_d, _ = mean_neighbor_distance(sq_dist)

    energy = energy[perm]
    out = {
        "coords": coords,
        "energy": energy,
        "targets": targets,
        "target_mask": target_mask,
        "target_energy": gather_neighbor_values(energy, idx),
        "weight": np.float32(bins.weight_for(mean_d)),
        "event_id": np.int64(event_id),
        "order": perm,
    }
    for src, dst, dtype, fill in _TRUTH:
        vals = event.get(src)
        if vals is not None and len(vals) != n:
            raise ValueError(f"event {event_id}: {src} has {len(vals)} values for {n} hits")
        out[dst] = (np.full(n, fill, dtype=dtype) if vals is None else np.asarray(vals, dtype=dtype))[perm]
    unknown = ~np.isin(out["subsystem"], list(SUBSYSTEMS))
    if unknown.any():
        raise ValueError(f"event {event_id}: hit_subsystem {int(out['subsystem'][unknown][0])} is not an "
                         f"id of {SUBSYSTEMS}")
    if crop:
        stats[CROPPED] += 1
        for key in _PER_POINT:
            out[key] = out[key][:cfg.max_points]
    stats[KEPT] += 1
    return out


# ---------------------------------------------------------------- toy events (tests, benchmarks)

def toy_event(rng: np.random.Generator, event_id: int, n_tracks: int | None = None, noise_hits: int = 0,
              layer_radii_cm=None, z_half_cm: float = 102.0, max_tracks: int = 60) -> dict:
    """A crude layered event: straight-ish helices from near the origin, one hit per layer
    crossed (48 sPHENIX radii by default), plus uniform noise hits. Columns as in the Parquet
    event schema (lists as numpy arrays)."""
    if layer_radii_cm is None:
        from fm4npp.serialize.coords import detector_geometry

        layer_radii_cm = detector_geometry().layer_radii_cm
    radii = np.asarray(layer_radii_cm, dtype=np.float64)
    if n_tracks is None:
        n_tracks = int(rng.integers(min(5, max_tracks), max_tracks + 1))
    xs, ys, zs, tids = [], [], [], []
    for t in range(n_tracks):
        phi0 = rng.uniform(-np.pi, np.pi)
        eta = rng.uniform(-1.1, 1.1)
        curv = rng.normal(0.0, 0.004)  # phi bend per cm of r
        z0 = rng.normal(0.0, 5.0)
        n_layers = int(rng.integers(4, len(radii) + 1))
        r = radii[:n_layers]
        phi = phi0 + curv * r
        z = z0 + r * np.sinh(eta)
        keep = np.abs(z) < z_half_cm
        xs.append(r[keep] * np.cos(phi[keep]))
        ys.append(r[keep] * np.sin(phi[keep]))
        zs.append(z[keep])
        tids.append(np.full(keep.sum(), t, dtype=np.int32))
    if noise_hits:
        r = rng.choice(radii, noise_hits)
        phi = rng.uniform(-np.pi, np.pi, noise_hits)
        xs.append(r * np.cos(phi))
        ys.append(r * np.sin(phi))
        zs.append(rng.uniform(-z_half_cm, z_half_cm, noise_hits))
        tids.append(np.full(noise_hits, -1, dtype=np.int32))
    x = np.concatenate(xs).astype(np.float32) if xs else np.zeros(0, np.float32)
    y = np.concatenate(ys).astype(np.float32) if ys else np.zeros(0, np.float32)
    z = np.concatenate(zs).astype(np.float32) if zs else np.zeros(0, np.float32)
    tid = np.concatenate(tids) if tids else np.zeros(0, np.int32)
    n = len(x)
    return {
        "event_id": int(event_id),
        "hit_x": x, "hit_y": y, "hit_z": z,
        "hit_energy": rng.lognormal(5.2, 0.7, n).astype(np.float32),
        "hit_track_id": tid,
        "hit_pdg": np.where(tid >= 0, 211, 11).astype(np.int32),
        "hit_pid_class": np.where(tid >= 0, 1, 4).astype(np.int8),
        "hit_noise": tid < 0,
    }


def write_event_shard(path, events) -> None:
    """Write event dicts (numpy arrays or lists per hit column) as one Parquet shard in the
    event schema. A missing ``tracks`` column is written as one primary track per hit track id
    (pdg from the hits, momentum and vertex unknown: 0), missing version 3 columns as an
    all-TPC event of unknown resolution (NaN), like a file before version 3."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fm4npp.data.schema import EVENT_SCHEMA

    defaults = {"hit_subsystem": SUBSYSTEM_IDS[PRE_V3_SUBSYSTEM], "hit_sigma_rphi": float("nan"),
                "hit_sigma_z": float("nan")}
    rows = []
    for ev in events:
        row = {key: (val.tolist() if isinstance(val, np.ndarray) else val) for key, val in ev.items()}
        row.setdefault("tracks", _tracks_of_hits(row["hit_track_id"], row.get("hit_pdg")))
        for key, fill in defaults.items():
            row.setdefault(key, [fill] * len(row["hit_x"]))
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA), path)


def _tracks_of_hits(track_ids, pdgs) -> list[dict]:
    pdg_of = dict(zip(track_ids, pdgs if pdgs is not None else [0] * len(track_ids)))
    zero = dict.fromkeys(("px", "py", "pz", "vx", "vy", "vz"), 0.0)
    return [{"track_id": int(t), "pdg": int(pdg_of[t]), "charge": 0, **zero,  # charge unknown: 0
             "parent_id": -1, "is_primary": True} for t in sorted(set(track_ids)) if t >= 0]


def write_toy_shards(out_dir, n_events: int, seed: int = 0, events_per_shard: int = 50,
                     max_tracks: int = 60, noise_hits: int = 0) -> list:
    """Write `n_events` toy events (ids 0..n-1) as Parquet shards in the event schema."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s0 in range(0, n_events, events_per_shard):
        events = [toy_event(rng, e, noise_hits=noise_hits, max_tracks=max_tracks)
                  for e in range(s0, min(n_events, s0 + events_per_shard))]
        path = out / f"toy-{s0 // events_per_shard:05d}.parquet"
        write_event_shard(path, events)
        paths.append(path)
    return paths
