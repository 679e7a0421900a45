"""One stream read for all components of a data mixture: its read plan, each component read back."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from fm4npp.data.mixture import _TAG, Component, MixtureError, Schedule


def read_plan(components: list[Component], counts, window: int | None = None,
              streams: int = 1) -> list[tuple[int, int, int, int | None]]:
    """Read items (component, epoch, shard, events to take or None: all) of one pass of a
    mixture's shared stream, in the order the schedule draws them (so its queues stay about a
    shard per component): an item comes at the draw of its first event. ``counts[c][j]``: the
    events component c's shard j serializes to. ``window`` (the Schedule's): a pass is the
    fewest whole windows in which every component is drawn through one epoch, and holds
    exactly what ``streams`` schedules draw in it (each component's epochs in turn, the last
    cut at an event); so passes follow each other without leftovers. None: each component once."""
    n = [sum(s) for s in counts]
    for c, nc in zip(components, n):
        if nc <= 0:
            raise MixtureError(f"mixture component {c.name!r} ({c.path}): no events to read")
    if window is None:
        rate, supply = [c.weight for c in components], n
    else:
        rate = Schedule(components, window, 0).counts * streams  # draws per window, all streams
        supply = rate * math.ceil(max(nc / r for nc, r in zip(n, rate)))
    items = []
    for i, (shards, r, left) in enumerate(zip(counts, rate, supply)):
        before, e = 0, 0
        while left > 0:
            for j, k in enumerate(shards):
                take = min(k, left)
                if take:
                    items.append((before / r, i, e, j, None if take == k else int(take)))
                before, left = before + take, left - take
            e += 1
    return [item[1:] for item in sorted(items)]


def shuffled(events, size: int, seed):
    """``events`` through a shuffle buffer of ``size`` events (0: unchanged), seeded by ``seed``
    (a list; kept apart from the other random streams of the same numbers)."""
    rng, buf = np.random.default_rng([*seed, _TAG]), []
    for ev in events:
        buf.append(ev)
        if len(buf) > size:
            i = int(rng.integers(len(buf)))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    yield from (buf[i] for i in rng.permutation(len(buf)))


class PlannedStream:
    """Each component's epochs from one stream read pass after pass: ``passes()`` iterates a
    pass as (component, epoch in the pass, epochs per pass E_c, event) in read_plan order, so
    epoch g of component c is epoch g % E_c of pass g // E_c. An event waits in a queue until
    its component's reader takes it (the plan's order keeps the queues short); events of an
    epoch its reader is past are dropped (a restored stream skipping what was consumed)."""

    def __init__(self, passes):
        self.passes = passes
        self.restore({}, {})

    def restore(self, want: dict, per_pass: dict) -> None:
        """Read on for readers that want epochs ``want`` (component -> epoch) next; ``per_pass``:
        the components' E_c where known (a component not read yet: None)."""
        self.per_pass = {c: e for c, e in per_pass.items() if e}
        self.want, self.queues, self.latest, self.it = dict(want), {}, {}, None
        # passes before the earliest wanted epoch's need not be read at all
        self.done = min([g // self.per_pass[c] if c in self.per_pass else 0 for c, g in want.items()] or [0]) - 1
        self.first = self.done + 1

    def events(self, c: int, g: int):
        """Component c's events of its epoch g, in stream order."""
        self.want[c] = g
        while True:
            q = self.queues.get((c, g))
            while q:
                yield q.popleft()
            if self._through(c, g):
                self.queues.pop((c, g), None)
                return
            self._pull()

    def _through(self, c: int, g: int) -> bool:
        if c not in self.per_pass:  # none of c's events yet: through if a whole pass had none
            return self.done >= self.first
        return self.latest.get(c, -1) > g or g // self.per_pass[c] <= self.done

    def _pull(self) -> None:
        if self.it is None:
            self.it = iter(self.passes())
        item = next(self.it, None)
        if item is None:
            self.it, self.done = None, self.done + 1
            return
        c, e, per_pass, ev = item
        g = (self.done + 1) * self.per_pass.setdefault(c, per_pass) + e
        self.latest[c] = g
        if g >= self.want.get(c, 0):
            self.queues.setdefault((c, g), deque()).append(ev)
