"""The downstream model: a feature source (frozen FM / raw inputs / scratch backbone) plus a task adapter.

An event here is the serialized-event dict of fm4npp.serialize (numpy arrays in serialized
order: coords (N,3), energy (N,), track_id, pid_class, noise, event_id; for the ep DIS tasks
also electron (N,) and log10_q2, fm4npp.downstream.dis). A feature source turns a padded batch
into point features (B,L,d); a task adapter (tracking / point classifier / event regressor)
sits on top. Only the adapter (and the layer-mix weights; for "scratch" also the backbone) is trained.
"""

from __future__ import annotations

import torch
from torch import nn

from fm4npp.downstream.classify import PointClassifier, classification_loss, predict_classes
from fm4npp.downstream.config import FinetuneConfig
from fm4npp.downstream.features import FrozenFMSource
from fm4npp.downstream.regress import EventRegressor
from fm4npp.downstream.tracking import TrackingAdapter, assign_tracks, tracking_loss
from fm4npp.metrics.classification import ELECTRON_NAMES, NOISE_NAMES, PID_NAMES


CLASS_NAMES = {"pid": PID_NAMES, "noise": NOISE_NAMES, "electron": ELECTRON_NAMES}  # per-point tasks
LABELS = {"pid": "pid_class", "noise": "noise", "electron": "electron"}  # their batch keys


class DownstreamModel(nn.Module):
    """Feature source + task adapter; ``loss`` and ``predict`` speak the batch contract."""

    def __init__(self, task: str, source: nn.Module, cfg: FinetuneConfig, weights: torch.Tensor | None = None):
        super().__init__()
        self.task = task
        self.source = source
        if task == "tracking":
            self.adapter = TrackingAdapter(source.d_out, cfg.tracking)
        elif task == "q2":
            self.adapter = EventRegressor(source.d_out, cfg.classifier)
        else:
            self.adapter = PointClassifier(source.d_out, len(CLASS_NAMES[task]), cfg.classifier)
        self.register_buffer("class_weights", weights if weights is not None else torch.ones(0))

    def forward(self, batch: dict):
        return self.adapter(self.source(batch), batch["mask"])

    def loss(self, batch: dict, out) -> dict:
        if self.task == "tracking":
            return tracking_loss(out, batch["track_id"], batch["noise"], batch["mask"], self.adapter.cfg)
        if self.task == "q2":
            return {"loss": self.adapter.loss(out, batch["log10_q2"])}
        labels = batch[LABELS[self.task]]
        w = self.class_weights if self.class_weights.numel() else None
        return {"loss": classification_loss(out, labels, w)}

    def predict(self, batch: dict, out) -> torch.Tensor:
        if self.task == "tracking":
            return assign_tracks(out[-1], batch["mask"])
        if self.task == "q2":
            return out  # (B,) log10 Q2: one number per event
        return predict_classes(out, batch["mask"])

    def n_trainable(self, adapter_only: bool = True) -> int:
        mod = self.adapter if adapter_only else self
        return sum(p.numel() for p in mod.parameters() if p.requires_grad)


def build_source(cfg: FinetuneConfig, model_cfg=None) -> nn.Module:
    from fm4npp.downstream.baselines import JoinedSource, RawSource, ScratchSource

    if cfg.source == "raw":
        return RawSource(cfg.raw_n_freq, cfg.whiten_eps)
    if cfg.source == "fm":  # n_layers + 1: the embedding is state 0
        fm = FrozenFMSource(cfg.layer_indices(model_cfg.n_layers + 1), model_cfg.d_model, cfg.whiten_eps,
                            cfg.fm_combine)
        return JoinedSource(fm, RawSource(cfg.raw_n_freq, cfg.whiten_eps)) if cfg.fm_with_raw else fm
    return ScratchSource(model_cfg)
