"""Padding serialized events into torch batches, per-task point labels and batch index orders."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fm4npp.downstream.features import pad_points, points_mask


def task_labels(task: str, event: dict) -> np.ndarray:
    """Per-point labels of ``task`` (q2: the event's log10 Q2, shape (1,))."""
    if task == "pid":
        return np.asarray(event["pid_class"], dtype=np.int64)
    if task == "noise":
        return np.asarray(event["noise"]).astype(np.int64)
    if task == "electron":
        return np.asarray(event["electron"], dtype=np.int64)
    if task == "q2":
        return np.asarray([event["log10_q2"]], dtype=np.float64)
    return np.asarray(event["track_id"], dtype=np.int64)


def make_batch(events: Sequence[dict], states: Sequence[torch.Tensor] | None = None,
               crop: int = 0, rng: np.random.Generator | None = None) -> dict:
    """Pad events into a torch batch. ``crop`` > 0 cuts longer events to a random contiguous
    window of that many serialized points (training only: bounds memory of attention)."""
    sl = []
    for ev in events:
        n = len(ev["energy"])
        if crop and n > crop:
            s = int(rng.integers(0, n - crop + 1)) if rng is not None else 0
            sl.append(slice(s, s + crop))
        else:
            sl.append(slice(0, n))
    lengths = [s.stop - s.start for s in sl]
    b = {
        "coords": pad_points([np.asarray(e["coords"], np.float32)[s] for e, s in zip(events, sl)]),
        "energy": pad_points([np.asarray(e["energy"], np.float32)[s] for e, s in zip(events, sl)]),
        "mask": points_mask(lengths),
        "track_id": pad_points([np.asarray(e["track_id"], np.int64)[s] for e, s in zip(events, sl)], -1),
        "pid_class": pad_points([np.asarray(e["pid_class"], np.int64)[s] for e, s in zip(events, sl)], -1),
        "noise": pad_points([np.asarray(e["noise"]).astype(np.int64)[s] for e, s in zip(events, sl)], -1),
    }
    # the ep DIS labels (fm4npp.downstream.dis), when every event has them
    if events and all("electron" in e for e in events):
        b["electron"] = pad_points([np.asarray(e["electron"], np.int64)[s] for e, s in zip(events, sl)], -1)
    if events and all("log10_q2" in e for e in events):
        b["log10_q2"] = torch.tensor([float(e["log10_q2"]) for e in events], dtype=torch.float32)
    if states is not None:
        b["states"] = pad_points([st[s] for st, s in zip(states, sl)])
    return b


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _by_length(events: Sequence[dict], batch_size: int):
    order = np.argsort([len(e["energy"]) for e in events], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
