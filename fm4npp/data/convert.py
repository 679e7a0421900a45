"""Importers: the public TPCpp-10M npz layout -> this project's event Parquet + manifest.

TPCpp-10M layout (FM4NPP public data): ``labeled/<split>/{spacepoints,track_ids,pid_labels,
noise_tags}.npz``. ``spacepoints.npz`` holds ``data`` (N_total x 4: E, x, y, z; cm, ADC-like
E) and ``size`` (points per event); the label files hold one value per point, aligned with
``data`` (array ``data``, or their only/first array). Unknown truth (hit PDG id, track
kinematics, vertex, parent, primary flag) is written as zeros / -1 / False and the manifest
says so in ``note``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fm4npp.data import shards
from fm4npp.data.errors import DataError, Problem
from fm4npp.data.schema import EVENT_SCHEMA, N_PID_CLASSES, SCHEMA_VERSION, SUBSYSTEM_IDS, TRACK_TYPE

LABEL_FILES = {"track_ids": "hit_track_id", "pid_labels": "hit_pid_class", "noise_tags": "hit_noise"}
TPCPP_NOTE = (
    "imported from the TPCpp-10M npz layout: hit_pdg, track pdg/charge/momentum/vertex are "
    "unknown and written as 0, parent_id as -1, is_primary as False; tracks are the distinct "
    "hit_track_id values of each event; every hit is a TPC hit (hit_subsystem tpc) of unknown "
    "resolution (hit_sigma_rphi/hit_sigma_z NaN)"
)
TPCPP_SUBSYSTEM = "tpc"  # TPCpp-10M holds sPHENIX TPC spacepoints only


# ---------------------------------------------------------------------------- writing


def write_dataset(tables: Iterable[pa.Table], out: str | Path, *, generator: dict | None = None,
                  detector: dict | None = None, seeds=None, note: str | None = None,
                  shard_prefix: str = "events", extra_counts: dict | None = None) -> dict:
    """Write event tables as shards ``<prefix>-00000.parquet``.. plus manifest.json.

    Writes are atomic (:mod:`fm4npp.data.shards`); the manifest comes last, so a directory
    with a manifest is complete. Returns the manifest.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, n_hits = {}, 0
    for i, table in enumerate(tables):
        table = table.cast(EVENT_SCHEMA)
        name = f"{shard_prefix}-{i:05d}.parquet"
        files[name] = {"sha256": shards.write_table_atomic(table, out / name), "events": table.num_rows}
        n_hits += int(pc.sum(pc.list_value_length(table.column("hit_x"))).as_py() or 0)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "generator": generator or {},
        "detector": detector or {},
        "seeds": seeds if seeds is not None else {},
        "counts": {"hits": n_hits, **(extra_counts or {})},
        "complete": True,
        "files": files,
    }
    if note:
        manifest["note"] = note
    shards.write_manifest(out, manifest)
    return shards.read_manifest(out)


def events_table(event_id: np.ndarray, sizes: np.ndarray, hits: dict[str, np.ndarray],
                 track_offsets: np.ndarray, tracks: dict[str, np.ndarray]) -> pa.Table:
    """An EVENT_SCHEMA table from flat per-hit / per-track arrays and per-event counts."""
    offsets = np.zeros(len(sizes) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    cols = {"event_id": pa.array(np.asarray(event_id, dtype=np.int64))}
    for name, field in zip(EVENT_SCHEMA.names[1:], list(EVENT_SCHEMA)[1:]):
        if name == "tracks":
            continue
        values = pa.array(np.asarray(hits[name]), type=field.type.value_type)
        cols[name] = pa.ListArray.from_arrays(pa.array(offsets), values)
    structs = pa.StructArray.from_arrays(
        [pa.array(np.asarray(tracks[f.name]), type=f.type) for f in TRACK_TYPE],
        fields=list(TRACK_TYPE),
    )
    cols["tracks"] = pa.ListArray.from_arrays(pa.array(np.asarray(track_offsets, dtype=np.int32)), structs)
    return pa.Table.from_pydict(cols, schema=EVENT_SCHEMA)


# ---------------------------------------------------------------------------- TPCpp import


def _npz_array(path: Path, expect_2d: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """('data' or the first array, 'size' if present) of an npz; DataError naming the file."""
    if not path.exists():
        raise DataError(Problem(str(path), "file missing"))
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if not keys:
                raise DataError(Problem(str(path), "npz holds no arrays"))
            others = [k for k in keys if k != "size"]
            key = "data" if "data" in keys else (others[0] if others else None)
            if key is None:
                raise DataError(Problem(str(path), "npz holds only 'size', no data array"))
            data = z[key]
            size = z["size"] if "size" in keys else None
    except DataError:
        raise
    except Exception as exc:  # zipfile/pickle/format errors: the file is corrupt or not npz
        raise DataError(Problem(str(path), f"not a readable npz file: {exc}")) from None
    if expect_2d and (data.ndim != 2 or data.shape[1] != 4):
        raise DataError(Problem(str(path), f"array shape {data.shape}, expected (N, 4) = E, x, y, z"))
    if not expect_2d:
        data = data.reshape(-1) if data.ndim == 2 and 1 in data.shape else data
        if data.ndim != 1:
            raise DataError(Problem(str(path), f"array shape {data.shape}, expected one value per point"))
    return data, size


def _point_problem(path: Path, bad: np.ndarray, offsets: np.ndarray, what: str, values) -> Problem:
    """Problem for the first flagged point: its event (row) and index within the event."""
    i = int(np.flatnonzero(bad)[0])
    ev = int(np.searchsorted(offsets, i, side="right") - 1)
    first = np.asarray(values[i]).item()
    return Problem(str(path), f"{int(bad.sum())} points {what} (first: point {i - offsets[ev]} = {first!r})", row=ev)


def read_tpcpp_split(split_dir: str | Path) -> dict[str, np.ndarray]:
    """Load one split: flat per-point arrays and per-event ``size``, with every length checked."""
    d = Path(split_dir)
    sp_path = d / "spacepoints.npz"
    data, size = _npz_array(sp_path, expect_2d=True)
    if size is None:
        raise DataError(Problem(str(sp_path), "no 'size' array (points per event)"))
    size = np.asarray(size).reshape(-1).astype(np.int64)
    if (size < 0).any():
        raise DataError(Problem(str(sp_path), "negative event size", row=int(np.flatnonzero(size < 0)[0])))
    if size.sum() != len(data):
        raise DataError(Problem(str(sp_path), f"sizes sum to {size.sum()} but data has {len(data)} points"))
    offsets = np.concatenate([[0], np.cumsum(size)])
    out = {"size": size, "offsets": offsets, "hit_energy": data[:, 0], "hit_x": data[:, 1],
           "hit_y": data[:, 2], "hit_z": data[:, 3]}
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        raise DataError(_point_problem(sp_path, bad, offsets, "with non-finite E/x/y/z", data[:, 0]))
    for stem, column in LABEL_FILES.items():
        path = d / f"{stem}.npz"
        values, lsize = _npz_array(path)
        if len(values) != len(data):
            raise DataError(Problem(str(path), f"{len(values)} values, spacepoints.npz has {len(data)} points"))
        if lsize is not None and not np.array_equal(np.asarray(lsize).reshape(-1), size):
            raise DataError(Problem(str(path), "'size' differs from spacepoints.npz 'size'"))
        if column == "hit_pid_class":
            v = values.astype(np.int64)
            bad = (v < 0) | (v >= N_PID_CLASSES) | (v != values)
            if bad.any():
                what = f"with a label outside 0..{N_PID_CLASSES - 1}"
                raise DataError(_point_problem(path, bad, offsets, what, values))
            values = v.astype(np.int8)
        elif column == "hit_noise":
            bad = (values != 0) & (values != 1)
            if bad.any():
                raise DataError(_point_problem(path, bad, offsets, "with a noise tag not 0/1", values))
            values = values.astype(bool)
        else:
            v = values.astype(np.int64)
            bad = (v != values) | (v < np.iinfo(np.int32).min) | (v > np.iinfo(np.int32).max)
            if bad.any():
                raise DataError(_point_problem(path, bad, offsets, "with a track id that is not an int32", values))
            values = v.astype(np.int32)
        out[column] = values
    return out


def _split_tables(split: dict[str, np.ndarray], events_per_shard: int, first_event_id: int,
                  skip_empty: bool) -> Iterable[pa.Table]:
    size, offsets = split["size"], split["offsets"]
    keep = np.flatnonzero(size > 0) if skip_empty else np.arange(len(size))
    for start in range(0, len(keep), events_per_shard):
        evs = keep[start:start + events_per_shard]
        # Only empty events are ever left out, so a shard's points are one contiguous slice.
        idx = slice(offsets[evs[0]], offsets[evs[-1] + 1]) if len(evs) else slice(0, 0)
        ev_of_hit = np.repeat(np.arange(len(evs)), size[evs])
        hits = {c: split[c][idx] for c in ("hit_x", "hit_y", "hit_z", "hit_energy", "hit_track_id",
                                           "hit_pid_class", "hit_noise")}
        n_hits = len(hits["hit_x"])
        hits["hit_pdg"] = np.zeros(n_hits, dtype=np.int32)
        hits["hit_subsystem"] = np.full(n_hits, SUBSYSTEM_IDS[TPCPP_SUBSYSTEM], dtype=np.int8)
        hits["hit_sigma_rphi"] = hits["hit_sigma_z"] = np.full(n_hits, np.nan, dtype=np.float32)
        # One track per distinct (event, track id); lexsort gives them sorted within each event.
        pairs = np.unique(np.stack([ev_of_hit, hits["hit_track_id"].astype(np.int64)], axis=1), axis=0)
        ntr = np.bincount(pairs[:, 0], minlength=len(evs)) if len(pairs) else np.zeros(len(evs), int)
        toff = np.concatenate([[0], np.cumsum(ntr)])
        nt = len(pairs)
        zeros = np.zeros(nt, dtype=np.float32)
        tracks = {"track_id": pairs[:, 1].astype(np.int32), "pdg": np.zeros(nt, np.int32),
                  "charge": np.zeros(nt, np.int8), "px": zeros, "py": zeros, "pz": zeros,
                  "vx": zeros, "vy": zeros, "vz": zeros, "parent_id": np.full(nt, -1, np.int32),
                  "is_primary": np.zeros(nt, bool)}
        yield events_table(first_event_id + evs, size[evs], hits, toff, tracks)


def import_tpcpp(src: str | Path, out: str | Path, *, events_per_shard: int = 1000,
                 skip_empty: bool = True) -> dict[str, dict]:
    """Convert TPCpp-10M npz to Parquet data sets; returns {split: manifest}.

    ``src`` is either a split directory (holding spacepoints.npz ...) -> one data set in
    ``out``, or a root with ``labeled/<split>/`` (or ``<split>/``) -> ``out/<split>/``.
    Event ids are the event's index within its split. Events without points are dropped
    (``skip_empty``) and counted in the manifest's ``counts.dropped_empty``.
    """
    src, out = Path(src), Path(out)
    if (src / "spacepoints.npz").exists():
        splits = {None: src}
    else:
        root = src / "labeled" if (src / "labeled").is_dir() else src
        splits = {p.name: p for p in sorted(root.iterdir()) if (p / "spacepoints.npz").exists()} \
            if root.is_dir() else {}
        if not splits:
            raise DataError(Problem(str(src), "no spacepoints.npz, nor labeled/<split>/spacepoints.npz"))
    targets = [out if name is None else out / name for name in splits]
    busy = [t for t in targets if t.exists() and any(t.iterdir())]
    if busy:
        raise DataError(Problem(str(busy[0]), "output directory exists and is not empty"))
    # Read (and check) every split before writing anything: bad input leaves no partial output.
    loaded = {name: read_tpcpp_split(path) for name, path in splits.items()}
    manifests = {}
    for name, split in loaded.items():
        target = out if name is None else out / name
        n_empty = int((split["size"] == 0).sum()) if skip_empty else 0
        manifests[name or target.name] = write_dataset(
            _split_tables(split, events_per_shard, 0, skip_empty), target,
            generator={"name": "TPCpp-10M import", "source": str(splits[name].resolve()), "split": name},
            note=TPCPP_NOTE, extra_counts={"dropped_empty": n_empty},
        )
    return manifests
