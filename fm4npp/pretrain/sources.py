"""Where a pretraining worker's batches come from: the exact in-memory order (MemorySource)
or a stream of this worker's split (StreamSource); see fm4npp.pretrain.loop's docstring. A data
mixture (fm4npp.data.mixture) has one of each too, drawing from one Ray dataset per component or
from one for all of them (mixture_dataset: one read stage and one serialization pool)."""

from __future__ import annotations

import numpy as np

from fm4npp.pretrain.config import PretrainConfig


def global_batch_indices(step: int, batch: int, n_events: int, seed: int) -> np.ndarray:
    """Indices (into the event-id-sorted training events) of the global batch of ``step``."""
    pos = np.arange(step * batch, (step + 1) * batch)
    out = np.empty(batch, dtype=np.int64)
    for epoch in np.unique(pos // n_events):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n_events)
        sel = pos // n_events == epoch
        out[sel] = perm[pos[sel] % n_events]
    return out


def shared_mixture(cfg: PretrainConfig) -> bool:
    """Whether a mixture's training split is ONE dataset for all components (mixture_dataset:
    one read stage, one serialization pool). Not for a stream split between several workers:
    Ray gives each worker a share of the rows that only on average holds what its schedule
    draws of each component, so its read queues would drift; those read one dataset each."""
    from fm4npp.data import mixture

    return mixture.is_mixture(cfg.data) and (cfg.data_mode == "memory" or cfg.workers == 1)


def train_keys(cfg: PretrainConfig) -> list[str]:
    """The Ray Train dataset names of the training split: one per mixture component unless
    shared_mixture."""
    from fm4npp.data import mixture

    if not mixture.is_mixture(cfg.data) or shared_mixture(cfg):
        return ["train"]
    return [f"train_{i}" for i in range(len(mixture.parse_spec(cfg.data, resolve=False)))]


def make_source(cfg: PretrainConfig, rank: int, world: int, mixture_record: list[dict] | None):
    """The worker's batch source for the run's data mode (and mixture, if any)."""
    import ray.train

    shards = [ray.train.get_dataset_shard(key) for key in train_keys(cfg)]
    if mixture_record:
        from fm4npp.data.mixture import components_of

        comps = components_of(mixture_record)
        return (MixtureStreamSource(shards, comps, cfg, world) if cfg.data_mode == "stream"
                else MixtureMemorySource(shards, comps, cfg, rank, world))
    return (StreamSource(shards[0], cfg, world) if cfg.data_mode == "stream"
            else MemorySource(shards[0], cfg, rank, world))


def materialize(shard, limit: int = 0) -> list[dict]:
    """Serialized events of a Ray Data shard (the first ``limit`` if > 0), sorted by (mixture
    component, event id): ids repeat across the components of a mixture."""
    from fm4npp.data import pipeline

    events = []
    for row in shard.iter_rows():
        if row.get("_epoch", 0):
            continue  # a cycling mixture stream's later epochs of a component repeat its first
        events.append(pipeline.row_to_event(row))
        if limit and len(events) >= limit:
            break
    events.sort(key=lambda e: (int(e.get("dataset", 0)), int(e["event_id"])))
    return events


class MemorySource:
    """Exact, world-size independent batches from the whole training split held in memory."""

    def __init__(self, shard, cfg: PretrainConfig, rank: int, world: int):
        self.events = materialize(shard)
        if not self.events:
            raise ValueError(f"no training events in {cfg.data}")
        self.cfg, self.rank, self.local = cfg, rank, cfg.batch_size // world

    def batch(self, step: int) -> dict:
        from fm4npp.data.pipeline import collate

        gidx = global_batch_indices(step, self.cfg.batch_size, len(self.events), self.cfg.seed)
        mine = gidx[self.rank * self.local : (self.rank + 1) * self.local]
        return collate([self.events[i] for i in mine])

    def position(self) -> dict:
        return {}

    def restore(self, position: dict) -> None:
        pass


class StreamSource:
    """Batches streamed from this worker's split of the Ray Data pipeline, epoch after epoch
    (a seeded local shuffle per epoch); the position is (epoch, batches consumed in it)."""

    def __init__(self, shard, cfg: PretrainConfig, world: int):
        self.shard, self.seed, self.local = shard, cfg.seed, cfg.batch_size // world
        self.epoch, self.index, self._it = 0, 0, None

    def _batches(self):
        from fm4npp.data.pipeline import collate

        while True:
            skip, n = self.index, 0
            for batch in self.shard.iter_batches(batch_size=self.local, drop_last=True,
                                                 batch_format="numpy",
                                                 local_shuffle_buffer_size=4 * self.local,
                                                 local_shuffle_seed=self.seed + self.epoch):
                n += 1
                if n <= skip:
                    continue  # consumed before the checkpoint we resumed from
                self.index = n
                yield collate(batch)
            if n == 0:
                raise ValueError("a worker's share of the training split is smaller than its batch")
            self.epoch, self.index = self.epoch + 1, 0

    def batch(self, step: int) -> dict:
        if self._it is None:
            self._it = self._batches()
        return next(self._it)

    def position(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, position: dict) -> None:
        self.epoch, self.index = int(position.get("epoch", 0)), int(position.get("index", 0))


class MixtureMemorySource(MemorySource):
    """MemorySource over a mixture: each component's training events in memory, sorted by id;
    the global batch of a step is drawn by fm4npp.data.mixture.memory_batch, a pure function of
    (seed, step), so batches are world-size independent and the data position is the step.
    ``shards``: one per component, or one shared by all (mixture_dataset without a window)."""

    def __init__(self, shards, comps, cfg: PretrainConfig, rank: int, world: int):
        from fm4npp.data.mixture import WINDOW_BATCHES, Schedule

        events = [e for s in shards for e in materialize(s)]
        self.events = [[e for e in events if int(e["dataset"]) == c.index] for c in comps]
        for c, mine in zip(comps, self.events):
            if not mine:
                raise ValueError(f"no training events in mixture component {c.name!r} ({c.path})")
        self.cfg, self.rank, self.local = cfg, rank, cfg.batch_size // world
        self.schedule = Schedule(comps, WINDOW_BATCHES * cfg.batch_size, cfg.seed)

    def batch(self, step: int) -> dict:
        from fm4npp.data.mixture import memory_batch
        from fm4npp.data.pipeline import collate

        picks = memory_batch(self.schedule, step, self.cfg.batch_size, [len(e) for e in self.events],
                             self.cfg.seed)
        return collate([self.events[c][i] for c, i in picks[self.rank * self.local:(self.rank + 1) * self.local]])


class MixtureStreamSource:
    """Batches mixed from this worker's split of the mixture's stream(s) (RayMixedStream, a
    seeded shuffle buffer per component epoch). Every rank follows the same schedule (seeded by
    the run's seed alone), so the position rank 0 checkpoints (stream position, each
    component's epoch and events consumed, its epochs per pass) is every rank's. (Ranks
    sharing one mixture_dataset each get a share of its rows from Ray: only on average what
    their schedule draws, so their read queues follow the noise of that share and may grow
    over many passes.)"""

    def __init__(self, shards, comps, cfg: PretrainConfig, world: int):
        self.local = cfg.batch_size // world
        self.stream = RayMixedStream(shards, comps, self.local, 4 * self.local, cfg.seed)

    def batch(self, step: int) -> dict:
        from fm4npp.data.pipeline import collate

        return collate(self.stream.take(self.local))

    def position(self) -> dict:
        return {"mixture": self.stream.position()}

    def restore(self, position: dict) -> None:
        if "mixture" in position:
            self.stream.restore(position["mixture"])


# -- a mixture's Ray Data streams (here, above the pipeline they use: fm4npp.data.mixture is
# the plain data layer) ------------------------------------------------------------------------
def build_mixture(components, split: str, pcfgs, bins_list) -> list:
    """One lazy Ray Dataset of serialized events per mixture component
    (fm4npp.data.pipeline.build_dataset with the component's own config and bins, its rows
    tagged with its index); mixture_dataset is one for all of them."""
    from fm4npp.data.mixture import check_same_serialization
    from fm4npp.data.pipeline import build_dataset

    check_same_serialization(components, bins_list)
    return [build_dataset(c.path, split, p, b, dataset=c.index) for c, p, b in zip(components, pcfgs, bins_list)]


TAGS = ["dataset", "_epoch", "_epochs"]  # a shared row's component, epoch in the pass, epochs per pass


def mixture_dataset(components, split: str, pcfgs, bins_list, window: int | None = None, streams: int = 1):
    """ONE lazy Ray Dataset of a mixture's serialized events: one read stage and one pool of
    serialization tasks (sized by the first component's config) for all components, each
    event serialized with its own component's config and bins; rows in fm4npp.data.mixed.read_plan order,
    tagged TAGS. ``window``: the schedule window of the ``streams`` readers of a pass
    (WINDOW_BATCHES x their batch): a pass cycles the components as they draw them; None: a
    pass holds each component once (memory mode)."""
    from fm4npp.data.io import shard_paths
    from fm4npp.data.mixed import read_plan
    from fm4npp.data.mixture import check_same_serialization
    from fm4npp.data.pipeline import check_compatible, serialize_items

    check_same_serialization(components, bins_list)
    for b, p in zip(bins_list, pcfgs):
        check_compatible(b, p.serialize)
    paths = [[str(f) for f in shard_paths(c.path)] for c in components]
    kept = [[_kept_rows(f, split, p) for f in fs] for fs, p in zip(paths, pcfgs)]
    plan = read_plan(components, [[int(k.sum()) for k in ks] for ks in kept], window, streams)
    per_pass = {i: e + 1 for i, e, _, _ in plan}  # the plan holds each component's epochs in order
    # an item cut at its `take`-th event stops reading after that event's row
    items = [{"path": paths[i][j], "tags": [components[i].index, e, per_pass[i]],
              "stop": -1 if take is None else int(np.flatnonzero(kept[i][j])[take - 1]) + 1}
             for i, e, j, take in plan]
    parts = {c.index: (b.content, p.to_dict()) for c, p, b in zip(components, pcfgs, bins_list)}
    return serialize_items(items, pcfgs[0], read_tagged, MixtureSerialize(parts, split))


def _kept_rows(path: str, split: str, cfg) -> np.ndarray:
    """Which rows of a shard serialize to an event of ``split`` (from event ids and point
    counts, as fm4npp.data.pipeline.policy_counts)."""
    import pyarrow.compute as pc

    from fm4npp.data.io import iter_tables
    from fm4npp.data.pipeline import keep_mask
    from fm4npp.serialize.config import kept_points

    parts = [keep_mask(t.column("event_id").to_numpy(), split, cfg)
             & (kept_points(pc.fill_null(pc.list_value_length(t.column("hit_x")), 0).to_numpy(), cfg.serialize) > 0)
             for _, _, t in iter_tables(path, ["event_id", "hit_x"], check=False, empty="keep")]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def read_tagged(batch):
    """Ray Data UDF: read items -> their raw events (fm4npp.data.pipeline.read_shards; up to
    row ``stop`` unless -1), each tagged with its item's TAGS."""
    import pyarrow as pa

    from fm4npp.data.pipeline import read_shards

    tables = []
    for item in batch.to_pylist():
        t = read_shards(pa.table({"path": [item["path"]]}))
        t = t.slice(0, item["stop"]) if item["stop"] >= 0 else t
        for key, v in zip(TAGS, item["tags"]):
            t = t.append_column(key, pa.array(np.full(t.num_rows, v, np.int64)))
        tables.append(t)
    return pa.concat_tables(tables)


class MixtureSerialize:
    """Ray Data UDF state: raw events of a mixture's components (tagged TAGS) -> serialized rows,
    each event by its own component's SerializeBatch (fm4npp.data.pipeline), tags kept."""

    def __init__(self, parts: dict, split: str):
        from fm4npp.data.pipeline import SerializeBatch

        self.parts = {c: SerializeBatch(b, p, split, dataset=c) for c, (b, p) in parts.items()}

    def __call__(self, table):
        import pyarrow as pa

        n = table.num_rows
        tags = np.stack([table.column(k).to_numpy() for k in TAGS]) if n else np.zeros((3, 0), np.int64)
        # a batch may span items: serialize each run of one (component, epoch), in order
        cuts = [0, *(np.flatnonzero((np.diff(tags, axis=1) != 0).any(axis=0)) + 1), n]
        out = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            c, e, per_pass = tags[:, a] if n else (next(iter(self.parts)), 0, 1)
            t = self.parts[int(c)](table.slice(a, b - a).drop_columns(TAGS))
            out.append(t.append_column("_epoch", pa.array(np.full(t.num_rows, e, np.int64)))
                       .append_column("_epochs", pa.array(np.full(t.num_rows, per_pass, np.int64))))
        return pa.concat_tables(out, promote_options="default")


def _pass_events(ds, chunk: int):
    """One pass over a Ray Dataset or Train shard of serialized rows, as
    fm4npp.data.mixed.PlannedStream reads it: (component, epoch in the pass, epochs per pass,
    event) in row order (a build_dataset row: its component's one epoch of the pass)."""
    from fm4npp.data.pipeline import _batch_to_events

    def one_pass():
        for batch in ds.iter_batches(batch_size=chunk, batch_format="numpy"):
            n = len(batch["event_id"])
            tags = [batch[k] if k in batch else np.full(n, d) for k, d in zip(TAGS, (0, 0, 1))]
            yield from zip(*(t.tolist() for t in tags), _batch_to_events(batch))

    return one_pass


class RayMixedStream:
    """fm4npp.data.mixture.MixedStream over Ray Datasets or Train shards of serialized rows:
    one shared by all components (mixture_dataset) or one per component (build_mixture), each
    read by a PlannedStream; each component epoch through a shuffle buffer seeded by (seed,
    component, epoch). Its position: MixedStream's plus each component's epochs per pass."""

    def __init__(self, datasets, comps, batch: int, shuffle_buffer: int, seed: int):
        from fm4npp.data.mixed import PlannedStream, shuffled
        from fm4npp.data.mixture import WINDOW_BATCHES, MixedStream, Schedule

        shared = len(datasets) == 1 and len(comps) > 1
        if not shared and len(datasets) != len(comps):
            raise ValueError(f"{len(datasets)} datasets for a mixture of {len(comps)}: one, or one per component")
        self.readers = [PlannedStream(_pass_events(ds, batch)) for ds in datasets]
        self.comps, self.of = comps, [self.readers[0 if shared else i] for i in range(len(comps))]
        factories = [lambda g, r=r, c=c.index: shuffled(r.events(c, g), shuffle_buffer, [seed, c, g])
                     for r, c in zip(self.of, comps)]
        self.mixed = MixedStream(factories, Schedule(comps, WINDOW_BATCHES * batch, seed), [c.name for c in comps])

    def take(self, n: int) -> list:
        return self.mixed.take(n)

    def position(self) -> dict:
        return {**self.mixed.position(), "per_pass": [r.per_pass.get(c.index) for r, c in zip(self.of, self.comps)]}

    def restore(self, position: dict) -> None:
        self.mixed.restore(position)
        # absent: a position written before the passes were recorded (the epochs per pass are
        # then read off the stream) and before this shuffle buffer replaced Ray's (the same
        # counts, another order)
        per_pass = position.get("per_pass") or [None] * len(self.comps)
        for r in self.readers:
            mine = [(c.index, g, e) for c, g, e, o in zip(self.comps, self.mixed.epoch, per_pass, self.of) if o is r]
            r.restore({c: g for c, g, _ in mine}, {c: e for c, _, e in mine})


def mixture_batches(datasets: list, components, batch_size: int, seed: int = 0,
                    shuffle_buffer: int | None = None, n_batches: int | None = None):
    """Padded torch batches mixed from a mixture's Ray Datasets (one shared, mixture_dataset
    with ``window=WINDOW_BATCHES * batch_size``; or one per component, build_mixture), as a
    streaming worker draws them; endless unless ``n_batches``."""
    import itertools

    from fm4npp.data.pipeline import collate

    stream = RayMixedStream(datasets, components, batch_size, shuffle_buffer or 0, seed)
    for _ in itertools.count() if n_batches is None else range(n_batches):
        yield collate(stream.take(batch_size))
