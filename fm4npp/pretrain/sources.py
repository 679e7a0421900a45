"""Where a pretraining worker's batches come from: the exact in-memory order (MemorySource)
or a stream of this worker's split (StreamSource); see fm4npp.pretrain.loop's docstring."""

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


def materialize(shard, limit: int = 0) -> list[dict]:
    """Serialized events of a Ray Data shard (the first ``limit`` if > 0), sorted by id."""
    from fm4npp.data import pipeline

    events = []
    for row in shard.iter_rows():
        events.append(pipeline.row_to_event(row))
        if limit and len(events) >= limit:
            break
    events.sort(key=lambda e: int(e["event_id"]))
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
