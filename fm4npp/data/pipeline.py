"""Parquet events -> serialized events -> padded torch batches, with Ray Data or plain Python.

Ray path (training): ``build_dataset`` = one read task per shard (:func:`read_shards`, the
checked reader of ``fm4npp.data.io``) -> ``map_batches`` tasks applying one
:class:`SerializeBatch` (built on the driver) -> a Dataset of serialized rows; a Ray Train
worker takes ``ray.train.get_dataset_shard(...)`` and iterates it with
``torch_batches(shard, cfg, epoch)`` (``iter_torch_batches`` + :func:`collate`).
Plain path (tests, adapters, non-Ray users): ``load_serialized`` + ``collate``. Both call the
same per-event function, ``fm4npp.serialize.events.serialize_event``.

Splits are a pure function of the event id (:mod:`fm4npp.serialize.splits`, re-exported here:
``keep_mask``, ``split_of``, ``iter_split_events``, ...).

Layering: this module USES serialization, so it sits above ``fm4npp.serialize`` (between it
and ``fm4npp.model``; tests/test_imports.py); nothing in ``fm4npp.serialize`` imports it.

Serialized rows on the Ray path are flat Arrow lists (coords 3N floats, targets 3kN, ...) plus
``n_points``; ``row_to_event`` / ``collate`` reshape them. Ragged columns reach ``collate`` as
numpy object arrays.

Bad input met inside a Ray task (a shard truncated after validation, an event that cannot be
serialized) raises :class:`fm4npp.data.io.DataError` naming the file and row; the read stage
carries each event's file and row (``_file``, ``_row``) for that.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from fm4npp.data.schema import PRE_V3_SUBSYSTEM, SUBSYSTEM_IDS
from fm4npp.serialize.bins import Bins
from fm4npp.serialize.config import MIN_POINTS, PipelineConfig, SerializeConfig, kept_points, over_cap
from fm4npp.serialize.events import (CROPPED, DROPPED_CAP, KEPT, SEEN, SKIPPED_FEW, check_compatible,
                                     serialize_event)
from fm4npp.serialize.splits import (READ_COLUMNS, SPLITS, event_uniform, in_fraction, iter_split_events,  # noqa: F401
                                     keep_mask, split_of)

# The ids-to-split functions and the split reader live in fm4npp.serialize.splits (the bins fit
# uses them too); they are re-exported here, where most callers look for them.
ALL_TPC = SUBSYSTEM_IDS[PRE_V3_SUBSYSTEM]
PLACE_COLUMNS = ["_file", "_row"]  # where each event came from (Ray path), for error messages


# ------------------------------------------------------------------ plain Python path

def load_serialized(data_dir, split: str, serialize_cfg: SerializeConfig, bins: Bins,
                    pipeline_cfg: PipelineConfig | None = None, stats: Counter | None = None) -> list[dict]:
    """All serialized events of a split, in file order (skipped/dropped events counted in stats).

    `pipeline_cfg` supplies the split fractions, salt and data fraction; serialization uses
    `serialize_cfg` (not pipeline_cfg.serialize)."""
    pcfg = pipeline_cfg if pipeline_cfg is not None else PipelineConfig(serialize=serialize_cfg)
    check_compatible(bins, serialize_cfg)
    out = []
    for ev in iter_split_events(data_dir, split, pcfg):
        s = serialize_event(ev, bins, serialize_cfg, stats)
        if s is not None:
            out.append(s)
    return out


def policy_counts(data_dir, split: str, cfg: PipelineConfig) -> Counter:
    """What serialization will skip, drop and crop in a split — from the point counts alone
    (cheap: reads two columns), so the Ray path's counts are known without collecting them."""
    import pyarrow.compute as pc

    from fm4npp.data.io import iter_tables

    counts = Counter()
    scfg = cfg.serialize
    for _, _, table in iter_tables(data_dir, ["event_id", "hit_x"], check=False, empty="keep"):
        mask = keep_mask(table.column("event_id").to_numpy(), split, cfg)
        n = pc.fill_null(pc.list_value_length(table.column("hit_x")), 0).to_numpy()[mask]
        over, kept = over_cap(n, scfg), kept_points(n, scfg) > 0
        counts[SEEN] += int(n.size)
        counts[SKIPPED_FEW] += int((n < MIN_POINTS).sum())
        counts[DROPPED_CAP] += int((over & ~kept).sum())
        counts[CROPPED] += int((over & kept).sum())
        counts[KEPT] += int(kept.sum())
    return counts


# ------------------------------------------------------------------ collate

def row_to_event(row) -> dict:
    """A serialized row of the Ray path (flat lists + n_points) -> a serialized event dict."""
    n = int(row["n_points"])
    coords = np.asarray(row["coords"], dtype=np.float32).reshape(n, 3)
    tmask = np.asarray(row["target_mask"], dtype=bool)
    k = tmask.size // n if n else 0
    return {
        "coords": coords,
        "energy": np.asarray(row["energy"], dtype=np.float32),
        "targets": np.asarray(row["targets"], dtype=np.float32).reshape(n, k, 3),
        "target_mask": tmask.reshape(n, k),
        "weight": np.float32(row["weight"]),
        "event_id": np.int64(row["event_id"]),
        "order": np.asarray(row["order"], dtype=np.int64),
        "track_id": np.asarray(row["track_id"], dtype=np.int32),
        "pid_class": np.asarray(row["pid_class"], dtype=np.int8),
        "noise": np.asarray(row["noise"], dtype=bool),
        "subsystem": np.asarray(row["subsystem"], dtype=np.int8),
        "dataset": np.int64(row.get("dataset", 0)),
        **({"target_energy": np.asarray(row["target_energy"], dtype=np.float32).reshape(n, k)}
           if row.get("target_energy") is not None else {}),
    }


def _batch_to_events(batch: dict) -> list[dict]:
    n = len(batch["event_id"])
    return [row_to_event({key: col[i] for key, col in batch.items()}) for i in range(n)]


def collate(events) -> dict:
    """Serialized events -> dict of torch tensors right-padded to the batch maximum length L.

    Accepts a list of serialized event dicts, or a Ray numpy batch (dict of columns, ragged
    ones as object arrays). Keys: coords (B,L,3) f32, energy (B,L) f32, mask (B,L) bool,
    targets (B,L,k,3) f32, target_mask (B,L,k) bool, weight (B,) f32, event_id (B,) i64,
    dataset (B,) i64 (the event's component of a data mixture, fm4npp.data.mixture; 0 for one
    data set: event ids are unique only within a component), track_id / pid_class / noise / order / subsystem (B,L) i64 padded with -1 (subsystem: the
    schema's ids in scan order, the model's input); target_energy (B,L,k) f32 when every
    event carries it.
    """
    import torch

    if isinstance(events, dict):
        events = _batch_to_events(events)
    if not events:
        raise ValueError("collate: empty batch")
    b = len(events)
    lengths = np.array([len(e["coords"]) for e in events])
    length = int(lengths.max())
    ks = {e["targets"].shape[1] for e in events}
    if len(ks) != 1:
        raise ValueError(f"collate: events with different k in one batch: {sorted(ks)}")
    k = ks.pop()
    out = {
        "coords": np.zeros((b, length, 3), np.float32),
        "energy": np.zeros((b, length), np.float32),
        "mask": np.zeros((b, length), bool),
        "targets": np.zeros((b, length, k, 3), np.float32),
        "target_mask": np.zeros((b, length, k), bool),
        "weight": np.array([e["weight"] for e in events], np.float32),
        "event_id": np.array([e["event_id"] for e in events], np.int64),
        "dataset": np.array([e.get("dataset", 0) for e in events], np.int64),
    }
    ints = ("track_id", "pid_class", "noise", "order", "subsystem")
    for key in ints:
        out[key] = np.full((b, length), -1, np.int64)
    padded = ["coords", "energy", "targets", "target_mask", *ints]
    if all("target_energy" in e for e in events):  # the neighbours' energies (knn_energy)
        out["target_energy"] = np.zeros((b, length, k), np.float32)
        padded.append("target_energy")
    for i, (e, n) in enumerate(zip(events, lengths)):
        out["mask"][i, :n] = True
        for key in padded:  # an event made without subsystems (by hand, older code): all TPC
            out[key][i, :n] = e[key] if key != "subsystem" else e.get(key, ALL_TPC)
    return {key: torch.from_numpy(v) for key, v in out.items()}


# ------------------------------------------------------------------ Ray Data path

def _to_arrow(events: list[dict]):
    """Serialized events -> an Arrow table of flat list columns (one row per event)."""
    import pyarrow as pa

    def lists(key, dtype):
        vals = [np.ascontiguousarray(e[key], dtype=dtype).ravel() for e in events]
        offsets = np.zeros(len(vals) + 1, np.int64)
        np.cumsum([v.size for v in vals], out=offsets[1:])
        flat = np.concatenate(vals) if vals else np.zeros(0, dtype)
        return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))

    return pa.table({
        "event_id": pa.array([int(e["event_id"]) for e in events], pa.int64()),
        "dataset": pa.array([int(e.get("dataset", 0)) for e in events], pa.int64()),
        "n_points": pa.array([len(e["coords"]) for e in events], pa.int64()),
        "weight": pa.array([float(e["weight"]) for e in events], pa.float32()),
        "coords": lists("coords", np.float32),
        "energy": lists("energy", np.float32),
        "targets": lists("targets", np.float32),
        "target_mask": lists("target_mask", np.bool_),
        "order": lists("order", np.int64),
        "track_id": lists("track_id", np.int32),
        "pid_class": lists("pid_class", np.int8),
        "noise": lists("noise", np.bool_),
        "subsystem": lists("subsystem", np.int8),
        **({"target_energy": lists("target_energy", np.float32)}
           if events and all("target_energy" in e for e in events) else {}),
    })


def read_shards(batch):
    """Ray Data UDF: a batch of shard paths -> their events (READ_COLUMNS, current schema)
    plus each event's file and row. Unreadable files raise DataError naming file and rows."""
    import pyarrow as pa

    from fm4npp.data.io import DataError, Problem, iter_tables
    from fm4npp.data.ray_errors import for_ray
    from fm4npp.data.schema import EVENT_SCHEMA

    schema = pa.schema([EVENT_SCHEMA.field(c) for c in READ_COLUMNS])
    out = schema.append(pa.field("_file", pa.string())).append(pa.field("_row", pa.int64()))
    tables = [out.empty_table()]  # a shard may hold no rows
    for path in batch.column("path").to_pylist():
        try:
            for _, row0, table in iter_tables(path, READ_COLUMNS, check=False, empty="keep"):
                try:
                    # one block type whatever the file's schema version (v1 declared nullable)
                    table = table.cast(schema)
                except (pa.ArrowException, ValueError) as exc:
                    raise DataError(Problem(path, f"rows from {row0}: {exc}", row=row0)) from None
                n = table.num_rows
                tables.append(table.append_column(out.field("_file"), pa.array([path] * n, pa.string()))
                              .append_column(out.field("_row"), pa.array(np.arange(row0, row0 + n))))
        except DataError as exc:
            raise for_ray(exc) from exc
    return pa.concat_tables(tables)


class SerializeBatch:
    """Ray Data UDF state: an Arrow batch of raw events -> an Arrow batch of serialized events of
    one split (events of other splits, and skipped/dropped events, leave no row). An event
    that fails to serialize raises DataError naming its file and row (``_file``/``_row``).
    Each row carries ``dataset``: the data set's index in a mixture (0 alone)."""

    def __init__(self, bins_content: dict, pipeline_cfg: dict, split: str, dataset: int = 0):
        self.bins = Bins(bins_content)
        self.cfg = PipelineConfig(**pipeline_cfg)
        self.split, self.dataset = split, int(dataset)
        self.stats = Counter()
        check_compatible(self.bins, self.cfg.serialize)

    def __call__(self, table):
        import pyarrow as pa

        from fm4npp.data.io import Problem, table_to_events
        from fm4npp.data.ray_errors import RayDataError

        table = table.filter(pa.array(keep_mask(table.column("event_id").to_numpy(), self.split, self.cfg)))
        places = [c for c in PLACE_COLUMNS if c in table.column_names]  # absent: called directly
        files = table.column("_file").to_pylist() if places else ["(unknown file)"] * table.num_rows
        rows = table.column("_row").to_pylist() if places else [None] * table.num_rows
        events = []
        for i, ev in enumerate(table_to_events(table.drop_columns(places))):
            try:
                s = serialize_event(ev, self.bins, self.cfg.serialize, self.stats)
            except Exception as exc:  # any failure on one event: name the event, keep the cause
                raise RayDataError(Problem(files[i], f"cannot serialize: {type(exc).__name__}: {exc}",
                                           row=rows[i], event_id=int(ev["event_id"]))) from exc
            if s is not None:
                events.append({**s, "dataset": self.dataset})
        if self.cfg.bucket_by_length:
            # Neighbouring rows -> neighbouring batches: sorting a chunk by length groups
            # similar lengths into the same training batches.
            events.sort(key=lambda e: (len(e["coords"]), int(e["event_id"])))
        return _to_arrow(events)


def build_dataset(data_dir, split: str, cfg: PipelineConfig, bins: Bins, dataset: int = 0):
    """A ray.data.Dataset of serialized events of one split (lazy; ``.materialize()`` to keep),
    each row tagged ``dataset`` (its index in a mixture: fm4npp.data.mixture).

    Row order is deterministic (preserve_order): the same data, config and seed give the same
    batches. Pass it to a TorchTrainer as ``datasets={split: ds}``; workers read
    ``ray.train.get_dataset_shard(split)`` with :func:`torch_batches`.
    """
    from fm4npp.data.io import shard_paths

    serializer = SerializeBatch(bins.content, cfg.to_dict(), split, dataset)  # checks the bins
    return serialize_items([{"path": str(p)} for p in shard_paths(data_dir)], cfg, read_shards, serializer)


def serialize_items(items: list[dict], cfg: PipelineConfig, read, serializer):
    """build_dataset's pipeline over read items (``read``: a UDF of a batch of them -> raw
    events; then ``serializer``, a callable on such a batch, in a pool of tasks); a mixture's
    one pipeline uses it too."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    # A bad file met in a task reaches the caller as itself (file, row, problem), not as a
    # UserCodeException that keeps only its text (see fm4npp.data.ray_errors).
    ctx.raise_original_map_exception = True
    # One task per item (a shard), reading with fm4npp.data.io (errors name file and rows); one
    # at a time by default: reading is ~10x cheaper than serializing.
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(read, batch_size=1, batch_format="pyarrow", num_cpus=cfg.read_num_cpus,
                        compute=ray.data.TaskPoolStrategy(size=cfg.read_concurrency))
    if len(items) < 2 * cfg.serialize_concurrency:
        # One block (a file) feeds one task at a time: with too few files for the pool, cut
        # blocks to map_batch_size events (streaming, no shuffle) so all tasks work.
        ds = ds.repartition(target_num_rows_per_block=cfg.map_batch_size)
    # Tasks, not an actor pool: the serializer's state is small and pickled once; an actor
    # pool cost seconds to start and stop in every run and split (~10x a small materialize's).
    return ds.map_batches(_serialize, fn_kwargs={"serializer": serializer}, batch_size=cfg.map_batch_size,
                          batch_format="pyarrow", num_cpus=cfg.serialize_num_cpus,
                          compute=ray.data.TaskPoolStrategy(size=cfg.serialize_concurrency))


def _serialize(table, serializer):
    return serializer(table)


serialized_dataset = build_dataset  # the name fm4npp.pretrain uses


def _collate_fn():
    """`collate` as the callable class Ray >= 2.47 wants (numpy batches in)."""
    from ray.data.collate_fn import NumpyBatchCollateFn

    class _Collate(NumpyBatchCollateFn):
        def __call__(self, batch):
            return collate(batch)

    return _Collate()


def torch_batches(ds, cfg: PipelineConfig, epoch: int = 0):
    """Iterate padded torch batches of a serialized Dataset or a Ray Train dataset shard.

    A seeded local shuffle (seed + epoch) unless bucketing by length or shuffle_seed is None.
    """
    shuffle = cfg.shuffle_seed is not None and not cfg.bucket_by_length
    return ds.iter_torch_batches(
        batch_size=cfg.batch_size,
        collate_fn=_collate_fn(),
        drop_last=cfg.drop_last,
        local_shuffle_buffer_size=cfg.shuffle_buffer if shuffle else None,
        local_shuffle_seed=(cfg.shuffle_seed + epoch) if shuffle else None,
    )


def plain_batches(events: list[dict], cfg: PipelineConfig, epoch: int = 0):
    """The plain-Python counterpart of `torch_batches` over `load_serialized` output
    (shuffle: a seeded permutation, not Ray's buffer shuffle; bucketing: sort by length)."""
    idx = np.arange(len(events))
    if cfg.bucket_by_length:
        idx = np.array(sorted(idx, key=lambda i: (len(events[i]["coords"]), int(events[i]["event_id"]))), int)
    elif cfg.shuffle_seed is not None:
        idx = np.random.default_rng([cfg.shuffle_seed, epoch]).permutation(len(events))
    stop = len(idx) - (len(idx) % cfg.batch_size if cfg.drop_last else 0)
    for i in range(0, stop, cfg.batch_size):
        yield collate([events[j] for j in idx[i:i + cfg.batch_size]])


