"""Input embedding: energy feature + NeRF positional encoding of (r, phi, eta), summed."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import ModelConfig


def nerf_encoding(p: torch.Tensor, n_freq: int) -> torch.Tensor:
    """gamma(p) = (p, sin(2^0 p), cos(2^0 p), ..., sin(2^(L-1) p), cos(2^(L-1) p)).

    p (..., c) -> (..., c * (1 + 2 n_freq)); frequencies grow geometrically (Mildenhall et al.).
    """
    freqs = 2.0 ** torch.arange(n_freq, device=p.device, dtype=p.dtype)
    angles = (p.unsqueeze(-1) * freqs).flatten(-2)  # (..., c * n_freq)
    return torch.cat([p, angles.sin(), angles.cos()], dim=-1)


class PointEmbedding(nn.Module):
    """(coords (b, l, 3) normalised r, phi, eta; energy (b, l) standardised) -> (b, l, d_model)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_freq = cfg.n_freq
        self.energy = nn.Linear(1, cfg.d_model)
        self.position = nn.Linear(cfg.pos_dim, cfg.d_model)

    def forward(self, coords, energy):
        return self.energy(energy.unsqueeze(-1)) + self.position(nerf_encoding(coords, self.n_freq))
