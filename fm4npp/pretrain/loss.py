"""The k-next-nearest-neighbour pretraining loss and its event-difficulty re-weighting.

Paper, appendix "Loss Re-scaling by Event Difficulty":

    L = 1/B * sum_i w_g(i) * L_i,      L_i = 1/S_i * sum_j ||s_ij - y_ij||^2

Here a "term" is one (point, neighbour) pair whose target exists (``target_mask``); its
squared error is the squared Euclidean distance in normalised (r, phi, eta) between the
predicted and the true neighbour. ``L_i`` is the mean of those terms over event i, so every
event counts equally whatever its size, and points with fewer than k next neighbours simply
contribute fewer terms. Padded points carry ``target_mask`` False and drop out.
"""

from __future__ import annotations

import torch


def per_event_mse(preds: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor):
    """Per-event mean squared neighbour distance.

    preds, targets: (B, L, k, 3); target_mask: (B, L, k) bool.
    Returns (loss (B,), n_terms (B,)); events without any target get loss 0 and n_terms 0.
    """
    m = target_mask.to(preds.dtype)
    sq = ((preds.float() - targets.float()) ** 2).sum(-1)  # (B, L, k), fp32 even under autocast
    sums = (sq * m).sum(dim=(1, 2))
    n = m.sum(dim=(1, 2))
    return sums / n.clamp(min=1), n


def pretrain_loss(
    preds: torch.Tensor,
    targets: torch.Tensor,
    target_mask: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch loss: mean over events of ``weight * per-event MSE`` (weight=None: plain mean).

    The mean is over all B events of the batch (the paper's 1/B), which is also what makes
    DDP's gradient average over equal per-worker batches equal the single-worker gradient.
    """
    per_event, _ = per_event_mse(preds, targets, target_mask)
    if weight is not None:
        per_event = per_event * weight.to(per_event.dtype)
    return per_event.mean()


def trivial_predictions(coords: torch.Tensor, k: int) -> torch.Tensor:
    """The baseline that predicts every neighbour at the point's own coordinates: (B,L,k,3)."""
    return coords.unsqueeze(2).expand(*coords.shape[:2], k, coords.shape[-1])
