"""Where a pretraining worker's batches come from: the exact in-memory order (MemorySource)
or a stream of this worker's split (StreamSource); see fm4npp.pretrain.loop's docstring. A data
mixture (fm4npp.data.mixture) has one of each too, drawing from one Ray dataset per component."""

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


def train_keys(cfg: PretrainConfig) -> list[str]:
    """The Ray Train dataset names of the training split: one per mixture component."""
    from fm4npp.data import mixture

    return [f"train_{i}" for i in range(len(mixture.parse_spec(cfg.data, resolve=False)))] \
        if mixture.is_mixture(cfg.data) else ["train"]


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
    (seed, step), so batches are world-size independent and the data position is the step."""

    def __init__(self, shards, comps, cfg: PretrainConfig, rank: int, world: int):
        from fm4npp.data.mixture import WINDOW_BATCHES, Schedule

        self.events = [materialize(s) for s in shards]
        for c, events in zip(comps, self.events):
            if not events:
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
    """Batches mixed from this worker's split of each component's stream (a seeded local
    shuffle per component epoch). Every rank follows the same schedule (seeded by the run's
    seed alone), so the position rank 0 checkpoints (stream position, each component's epoch
    and events consumed) is every rank's."""

    def __init__(self, shards, comps, cfg: PretrainConfig, world: int):
        from fm4npp.data.mixture import WINDOW_BATCHES, MixedStream, Schedule

        self.local = cfg.batch_size // world
        self.stream = MixedStream([ray_events(s, self.local, 4 * self.local, cfg.seed) for s in shards],
                                  Schedule(comps, WINDOW_BATCHES * self.local, cfg.seed), [c.name for c in comps])

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
    tagged with its index)."""
    from fm4npp.data.mixture import check_same_serialization
    from fm4npp.data.pipeline import build_dataset

    check_same_serialization(components, bins_list)
    return [build_dataset(c.path, split, p, b, dataset=c.index) for c, p, b in zip(components, pcfgs, bins_list)]


def ray_events(ds, chunk: int, shuffle_buffer: int | None, seed: int):
    """A MixedStream factory over a Ray Dataset or Train shard of serialized rows: epoch ->
    its events (a seeded local shuffle per epoch when ``shuffle_buffer``)."""
    from fm4npp.data.pipeline import _batch_to_events

    def events(epoch: int):
        for batch in ds.iter_batches(batch_size=chunk, batch_format="numpy",
                                     local_shuffle_buffer_size=shuffle_buffer,
                                     local_shuffle_seed=seed + epoch if shuffle_buffer else None):
            yield from _batch_to_events(batch)

    return events


def mixture_batches(datasets: list, components, batch_size: int, seed: int = 0,
                    shuffle_buffer: int | None = None, n_batches: int | None = None):
    """Padded torch batches mixed from one Ray Dataset per component (build_mixture), as a
    streaming worker draws them; endless unless ``n_batches``."""
    import itertools

    from fm4npp.data.mixture import WINDOW_BATCHES, MixedStream, Schedule
    from fm4npp.data.pipeline import collate

    stream = MixedStream([ray_events(ds, batch_size, shuffle_buffer, seed) for ds in datasets],
                         Schedule(components, WINDOW_BATCHES * batch_size, seed), [c.name for c in components])
    for _ in itertools.count() if n_batches is None else range(n_batches):
        yield collate(stream.take(batch_size))
