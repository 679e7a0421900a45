"""Per-point classification adapter for particle ID (5 classes) and noise tagging (2 classes).

Paper appendix: linear embedding -> one self-attention layer over all points of the event ->
MLP with softmax. Class imbalance (pions dominate PID, signal dominates noise) is handled with
class weights in the cross-entropy computed from the training labels' frequencies.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fm4npp.downstream.config import ClassifierConfig


class PointClassifier(nn.Module):
    def __init__(self, d_in: int, n_classes: int, cfg: ClassifierConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ClassifierConfig()
        d = cfg.d_embed
        self.proj = nn.Linear(d_in, d)
        # Dropout acts on the point embeddings, not on the attention weights: those are (L x L)
        # per head, and at L = 4000 masking them cost 5x the step time of the whole adapter.
        self.drop = nn.Dropout(cfg.dropout)
        self.attn = nn.MultiheadAttention(d, cfg.n_heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(
            nn.Linear(d, cfg.d_hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.d_hidden, n_classes)
        )

    def points(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B,L,d_in), mask (B,L) True = real point -> point embeddings (B,L,d_embed)."""
        h = self.drop(self.proj(x))
        # key padding: padded points are never attended to (rows of padded queries are ignored)
        kpm = ~mask
        kpm = kpm & ~kpm.all(-1, keepdim=True)  # an empty event would give NaN rows
        a = self.attn(h, h, h, key_padding_mask=kpm, need_weights=False)[0]
        return self.norm(h + a)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B,L,d_in), mask (B,L) True = real point -> logits (B,L,C)."""
        return self.head(self.points(x, mask))


def class_weights(labels, n_classes: int, power: float = 0.5) -> torch.Tensor:
    """weight_c = (N / (C * n_c))^power from training labels (padding -1 ignored).

    power 1 is sklearn's "balanced"; a class absent from training gets weight 0 (nothing to
    learn from, and an infinite weight would be meaningless).
    """
    y = np.concatenate([np.asarray(a).ravel() for a in labels]) if isinstance(labels, (list, tuple)) else np.asarray(labels).ravel()
    y = y[y >= 0]
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.zeros(n_classes)
    present = counts > 0
    w[present] = (y.size / (n_classes * counts[present])) ** power
    return torch.tensor(w, dtype=torch.float32)


def classification_loss(logits, labels, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted cross entropy over real points (labels -1 = padding are ignored)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), weight=weights, ignore_index=-1)


@torch.no_grad()
def predict_classes(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1).masked_fill(~mask, -1)
