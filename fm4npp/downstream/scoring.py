"""Evaluation of a downstream model: per-point predictions and the paper's metrics on them."""

from __future__ import annotations

import numpy as np
import torch

from fm4npp.downstream.batching import _by_length, make_batch, task_labels
from fm4npp.downstream.config import FinetuneConfig
from fm4npp.downstream.model import CLASS_NAMES, DownstreamModel
from fm4npp.metrics.classification import classification_metrics, tag_metrics
from fm4npp.metrics.regression import log_q2_metrics
from fm4npp.metrics.tracking import tracking_metrics


@torch.no_grad()
def predict(model: DownstreamModel, events, states=None,
            batch_size: int = FinetuneConfig.batch_size) -> list[np.ndarray]:
    """Per event, the predicted label of each point (serialized order); for q2 the event's
    predicted log10 Q2 (a float)."""
    model.eval()
    out: list[np.ndarray | None] = [None] * len(events)
    for idx in _by_length(events, batch_size):
        b = make_batch([events[i] for i in idx], [states[i] for i in idx] if states is not None else None)
        pred = model.predict(b, model(b))
        for j, i in enumerate(idx):
            out[i] = float(pred[j]) if pred.dim() == 1 else pred[j, : len(events[i]["energy"])].numpy()
    return out  # type: ignore[return-value]


def score(task: str, events, preds, kinematics=None) -> dict:
    """The paper's metrics for ``task`` on these events and predictions."""
    if task == "tracking":
        return tracking_metrics([task_labels(task, e) for e in events], preds,
                                [np.asarray(e["noise"]) for e in events], kinematics=kinematics)
    if task == "q2":
        return log_q2_metrics(preds, [float(e["log10_q2"]) for e in events])
    if task == "electron":
        return tag_metrics([task_labels(task, e) for e in events], preds, CLASS_NAMES[task])
    return classification_metrics([task_labels(task, e) for e in events], preds, CLASS_NAMES[task])
