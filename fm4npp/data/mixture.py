"""Several data sets read at once with mixing weights (issue 21): the spec, the schedule that
says which data set each event of the stream comes from, and the streams it draws from.

Spec (``fm4npp pretrain --data``, ``PretrainConfig.data``)::

    NAME=PATH:WEIGHT[,NAME=PATH:WEIGHT ...]      e.g. sphenix=/d/s:0.5,aleph=/d/a:0.25,zeus=/d/z:0.25

NAME: letters, digits, ``_ . -`` (unique); PATH: a data set directory with its own fitted
``PATH/bins.json``; WEIGHT: a positive number. A string that is an existing directory, or has
no ``=``, is one data set, read exactly as before. The components keep the spec's order; an
event's component index (0, 1, ...) is the ``dataset`` entry of its row and of a collated batch
(``dataset`` (B,) int64; 0 for a single data set). Event ids are unique only within a
component, so events are told apart by (dataset, event_id).

Serialization. Each component is serialized with its own bins (its detector's normalisation
ranges, layer radii, energy constants, difficulty weights); the grid, k and energy transform
must be the same for all (:func:`check_same_serialization`). Coordinates, energy and the
subsystem ids (fm4npp.data.schema.SUBSYSTEMS, global across detectors) are the common input.

Weights are normalised to sum 1. The event stream is cut into windows of ``WINDOW_BATCHES``
batches; a window holds exactly ``apportion(window, w)`` events of component i (largest
remainder), at seeded random places. Over every whole window the proportions are w_i within
1 / window; a single batch follows them on average. Each component is read as its own endless
sequence of epochs, so a small component is cycled more often than a large one, and no event
repeats before its component's epoch is through.

- Memory mode (exact): the schedule runs over the GLOBAL batch positions; component c's k-th
  draw is position k of c's endless sequence of seeded permutations of its events (sorted by
  event id). Pure function of (seed, step): world-size independent and resumable by the step.
- Stream mode: each worker mixes its own share of the components with the same rule over its
  local batches (the schedule seeded by the run's seed); its position is the stream position
  plus each component's (epoch, events consumed), see :class:`MixedStream`. The components are
  read either from one dataset each, or from ONE dataset for all (one read stage, one
  serialization pool: fm4npp.data.mixed, fm4npp.pretrain.sources.mixture_dataset), whose pass
  holds exactly what the schedule draws in a number of whole windows: every component's
  epochs in turn, the last one of a pass cut short (so the first shards of a component cycled
  a fractional number of times per pass come a little more often than its last ones).

Validation: the val splits of all components, concatenated; a cap on validation events is split
between components by weight (:func:`apportion`), so a capped val set is the mixture too.

This module is plain Python and numpy (the data layer); the Ray Data side (the serialized
datasets, the mixed torch batches) is in fm4npp.pretrain.sources, above the pipeline it uses.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WINDOW_BATCHES = 16  # batches per schedule window: proportions are exact per window
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_TAG = 0x6D6978  # "mix": keeps the mixture's random streams apart from the others of a seed


class MixtureError(ValueError):
    """A malformed mixture spec, or components that cannot be mixed."""


@dataclass(frozen=True)
class Component:
    name: str
    path: str
    weight: float  # normalised: the weights of a mixture sum to 1
    given: float  # the weight as written in the spec
    index: int  # position in the spec: the `dataset` id of its events
    bins: str = ""  # its serialization bins file; "" = PATH/bins.json

    @property
    def bins_path(self) -> Path:
        return Path(self.bins) if self.bins else Path(self.path) / "bins.json"


def is_mixture(spec: str) -> bool:
    return "=" in spec and not Path(spec).expanduser().is_dir()


def parse_spec(spec: str, resolve: bool = True) -> list[Component]:
    """The components of a mixture spec (paths made absolute when ``resolve``). A malformed
    part, a weight that is not a positive number, or a repeated name: MixtureError naming it."""
    if not spec.strip():
        raise MixtureError("empty data mixture spec")
    parts, seen = [], set()
    for i, part in enumerate(spec.split(",")):
        where = f"data mixture {spec!r}, part {i + 1} {part!r}"
        name, eq, rest = part.strip().partition("=")
        path, colon, w = rest.rpartition(":")
        if not eq or not colon or not name or not path:
            raise MixtureError(f"{where}: expected NAME=PATH:WEIGHT")
        if not _NAME.match(name):
            raise MixtureError(f"{where}: name {name!r} may hold only letters, digits, '_', '.', '-'")
        if name in seen:
            raise MixtureError(f"{where}: name {name!r} appears twice")
        try:
            given = float(w)
        except ValueError:
            raise MixtureError(f"{where}: weight {w!r} is not a number") from None
        if not (math.isfinite(given) and given > 0):
            raise MixtureError(f"{where}: weight {w!r} must be a positive number")
        seen.add(name)
        parts.append((name, str(Path(path).expanduser().resolve()) if resolve else path, given))
    total = sum(g for _, _, g in parts)
    return [Component(n, p, g / total, g, i) for i, (n, p, g) in enumerate(parts)]


def format_spec(components: list[Component]) -> str:
    """The spec of ``components`` (parse_spec(format_spec(c)) == c): the resolved config's."""
    return ",".join(f"{c.name}={c.path}:{c.given!r}" for c in components)


def apportion(total: int, weights) -> np.ndarray:
    """``total`` split into integers in proportion to ``weights`` (largest remainder; ties go
    to the earlier component)."""
    w = np.asarray(weights, dtype=np.float64)
    quota = total * w / w.sum()
    out = np.floor(quota).astype(np.int64)
    rest = np.argsort(-(quota - out), kind="stable")[: total - int(out.sum())]
    out[rest] += 1
    return out


# ------------------------------------------------------------------ the schedule

class Schedule:
    """Which component each position of an endless event stream comes from (module docstring:
    windows of ``window`` positions with exact counts, in a seeded order)."""

    def __init__(self, components: list[Component], window: int, seed):
        self.counts = apportion(window, [c.weight for c in components])
        empty = [c for c, n in zip(components, self.counts) if n == 0]
        if empty:
            raise MixtureError(f"mixture component {empty[0].name!r}: weight {empty[0].weight:.3g} leaves "
                               f"it no event in a window of {window} events; raise its weight or the batch")
        self.window, self.seed, self._cache = int(window), [int(s) for s in np.atleast_1d(seed)], {}

    def _window(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        if e not in self._cache:
            labels = np.repeat(np.arange(len(self.counts)), self.counts)
            labels = np.random.default_rng([*self.seed, _TAG, e]).permutation(labels)
            occ = np.empty(len(labels), np.int64)  # earlier slots of the same label in the window
            for c in range(len(self.counts)):
                sel = labels == c
                occ[sel] = np.arange(sel.sum())
            self._cache = {e: (labels, occ), **{k: v for k, v in self._cache.items() if k == e - 1}}
        return self._cache[e]

    def draws(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(component, k) of positions start..stop-1: k = how many draws of that component
        came before it in the whole stream."""
        pos = np.arange(start, stop)
        labels, k = np.empty(len(pos), np.int64), np.empty(len(pos), np.int64)
        for e in np.unique(pos // self.window):
            sel = pos // self.window == e
            lab, occ = self._window(int(e))
            labels[sel] = lab[pos[sel] % self.window]
            k[sel] = int(e) * self.counts[labels[sel]] + occ[pos[sel] % self.window]
        return labels, k


def endless_index(k: np.ndarray, n: int, seed) -> np.ndarray:
    """Index of draw k in an endless sequence of seeded permutations of n items."""
    out = np.empty(len(k), np.int64)
    for epoch in np.unique(k // n):
        sel = k // n == epoch
        out[sel] = np.random.default_rng([*np.atleast_1d(seed).tolist(), int(epoch)]).permutation(n)[k[sel] % n]
    return out


def memory_batch(schedule: Schedule, step: int, batch: int, sizes, seed: int) -> list[tuple[int, int]]:
    """(component, index into its id-sorted events) of each event of global batch ``step``."""
    labels, k = schedule.draws(step * batch, (step + 1) * batch)
    idx = np.empty(batch, np.int64)
    for c in np.unique(labels):
        sel = labels == c
        idx[sel] = endless_index(k[sel], int(sizes[c]), [seed, _TAG, int(c)])
    return list(zip(labels.tolist(), idx.tolist()))


class MixedStream:
    """Events drawn by a Schedule from one stream per component. ``factories[c](epoch)`` gives
    an iterator over component c's events in that epoch (the same order each time it is asked
    again: a restored stream skips what was consumed)."""

    def __init__(self, factories, schedule: Schedule, names: list[str]):
        self.factories, self.schedule, self.names = factories, schedule, names
        self.pos, self.epoch, self.index = 0, [0] * len(names), [0] * len(names)
        self._its = [None] * len(names)

    def _next(self, c: int):
        while True:
            if self._its[c] is None:
                self._its[c] = iter(self.factories[c](self.epoch[c]))
                for i in range(self.index[c]):  # consumed before the checkpoint resumed from
                    if next(self._its[c], None) is None:
                        raise ValueError(f"mixture component {self.names[c]!r}: epoch {self.epoch[c]} "
                                         f"has {i} events, the restored position is {self.index[c]}")
            ev = next(self._its[c], None)
            if ev is not None:
                self.index[c] += 1
                return ev
            if self.index[c] == 0:
                raise ValueError(f"mixture component {self.names[c]!r}: no events in this stream")
            self.epoch[c], self.index[c], self._its[c] = self.epoch[c] + 1, 0, None

    def take(self, n: int) -> list:
        labels, _ = self.schedule.draws(self.pos, self.pos + n)
        out = [self._next(int(c)) for c in labels]
        self.pos += n
        return out

    def position(self) -> dict:
        return {"pos": self.pos, "epoch": list(self.epoch), "index": list(self.index)}

    def restore(self, position: dict) -> None:
        self.pos = int(position.get("pos", 0))
        self.epoch = [int(v) for v in position.get("epoch", self.epoch)]
        self.index = [int(v) for v in position.get("index", self.index)]
        self._its = [None] * len(self.names)


# ------------------------------------------------------------------ bins and the record

def check_same_serialization(components: list[Component], bins_list) -> None:
    """Refuse components whose bins differ in grid, k or energy transform (the model sees one
    input representation); name the component and the field."""
    first = bins_list[0].content["config"]
    for c, b in zip(components[1:], bins_list[1:]):
        fitted = b.content["config"]
        for key in ("n_bins", "k", "energy_transform"):
            if fitted[key] != first[key]:
                raise MixtureError(
                    f"mixture component {c.name!r}: bins {c.bins_path} were fitted with {key}="
                    f"{fitted[key]}, component {components[0].name!r} with {key}={first[key]}; all "
                    f"components must share the serialization grid, k and energy transform")


def record(components: list[Component], bins_list) -> list[dict]:
    """What a run records of its mixture (MLflow param ``mixture``, checkpoint ``mixture``)."""
    return [{**asdict(c), "bins": str(c.bins_path), "bins_hash": b.hash,
             "detector": b.content["config"]["detector"]} for c, b in zip(components, bins_list)]


def components_of(rec: list[dict]) -> list[Component]:
    """The components of a mixture record (the inverse of :func:`record`)."""
    return [Component(r["name"], r["path"], float(r["weight"]), float(r["given"]), int(r["index"]),
                      r.get("bins", "")) for r in rec]


def record_hash(rec: list[dict]) -> str:
    """The run's bins identity for a mixture: one hash over each component's name and bins."""
    pairs = [[r["name"], r["bins_hash"]] for r in rec]
    return "mixture:" + hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def read_record(source: dict) -> list[dict] | None:
    """The mixture record of a checkpoint's extra / train state, or of an MLflow run's params
    (where it is a JSON string); None for a run on one data set."""
    rec = source.get("mixture")
    return json.loads(rec) if isinstance(rec, str) else rec
