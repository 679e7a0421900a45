"""Event-level regression adapter (the ep DIS ``q2`` task: log10 Q2 of the event).

The classifier's point stage (linear embedding -> one self-attention layer over the event's
points, so a point's embedding can depend on the others, e.g. the electron candidate on the
hadronic side), then the event is pooled: the mean and the max over its real points side by
side (mean alone washes out one track among many; max alone ignores how many points agree),
then an MLP to one number. Sizes come from the classifier section (``classifier.d_embed``,
``n_heads``, ``d_hidden``, ``dropout``) so the config and run names of the other tasks stay
as they are. The target is standardised with the training labels' mean and std (buffers,
saved with the adapter), so the loss is the MSE in units of the training spread.
Training crops events longer than ``crop_points`` (fm4npp.downstream.batching.make_batch) while
the label stays the whole event's: harmless for ep events (a few hundred hits, cap 4000).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fm4npp.downstream.classify import PointClassifier
from fm4npp.downstream.config import ClassifierConfig


class EventRegressor(PointClassifier):
    """The classifier's point stage, then mean and max pooling over the event and an MLP."""

    def __init__(self, d_in: int, cfg: ClassifierConfig | None = None):
        super().__init__(d_in, 1, cfg)
        d = self.cfg.d_embed
        self.head = nn.Sequential(nn.Linear(2 * d, self.cfg.d_hidden), nn.ReLU(),
                                  nn.Dropout(self.cfg.dropout), nn.Linear(self.cfg.d_hidden, 1))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def fit_target(self, y) -> None:
        """Standardisation of the target from the training labels."""
        y = np.asarray(y, np.float64)
        self.y_mean.fill_(float(y.mean()))
        self.y_std.fill_(float(y.std()) if y.size > 1 and y.std() > 0 else 1.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B,L,d_in), mask (B,L) True = real point -> prediction (B,) in label units."""
        h = self.points(x, mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1)
        mx = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))  # no real point: 0
        return self.y_mean + self.y_std * self.head(torch.cat([mean, mx], -1)).squeeze(-1)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss((pred - self.y_mean) / self.y_std, (y - self.y_mean) / self.y_std)
