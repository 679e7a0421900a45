"""Input embedding: energy feature + NeRF positional encoding of (r, phi, eta) + subsystem, summed.

The subsystem embedding (ModelConfig.n_subsystems rows) starts at zero, and the TPC's row
(REFERENCE_SUBSYSTEM) stays zero (no gradient): a model on all-TPC data, or given no
subsystems, is exactly the model without it, and weights saved before it existed load as
zeros (`_load_from_state_dict`). An embedding gather: no matmul FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import REFERENCE_SUBSYSTEM, ModelConfig


def nerf_encoding(p: torch.Tensor, n_freq: int) -> torch.Tensor:
    """gamma(p) = (p, sin(2^0 p), cos(2^0 p), ..., sin(2^(L-1) p), cos(2^(L-1) p)).

    p (..., c) -> (..., c * (1 + 2 n_freq)); frequencies grow geometrically (Mildenhall et al.).
    """
    freqs = 2.0 ** torch.arange(n_freq, device=p.device, dtype=p.dtype)
    angles = (p.unsqueeze(-1) * freqs).flatten(-2)  # (..., c * n_freq)
    return torch.cat([p, angles.sin(), angles.cos()], dim=-1)


class PointEmbedding(nn.Module):
    """(coords (b, l, 3) normalised r, phi, eta; energy (b, l) standardised; subsystem (b, l)
    int ids or None) -> (b, l, d_model)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_freq = cfg.n_freq
        self.energy = nn.Linear(1, cfg.d_model)
        self.position = nn.Linear(cfg.pos_dim, cfg.d_model)
        # built from zeros: drawing a random init would shift the seeded init of every later
        # weight, and the model would no longer equal the one without the embedding
        self.subsystem = (nn.Embedding(cfg.n_subsystems, cfg.d_model, padding_idx=REFERENCE_SUBSYSTEM,
                                       _weight=torch.zeros(cfg.n_subsystems, cfg.d_model))
                          if cfg.n_subsystems else None)

    @torch.no_grad()
    def reset_subsystem(self):
        if self.subsystem is not None:
            nn.init.zeros_(self.subsystem.weight)

    def forward(self, coords, energy, subsystem=None):
        x = self.energy(energy.unsqueeze(-1)) + self.position(nerf_encoding(coords, self.n_freq))
        if self.subsystem is not None and subsystem is not None:
            x = x + self.subsystem(subsystem).to(x.dtype)
        return x

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "subsystem.weight"
        if self.subsystem is not None and key not in state_dict:
            state_dict[key] = torch.zeros_like(self.subsystem.weight)  # saved before it existed
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
