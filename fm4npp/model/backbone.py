"""FM4NPP: embedding -> pre-norm residual Mamba2 blocks -> RMSNorm -> linear kNN head."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import ModelConfig
from .embed import PointEmbedding
from .mamba2 import Mamba2


class Block(nn.Module):
    """x + Mamba2(RMSNorm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mixer = Mamba2(cfg)

    def forward(self, x, mask=None):
        return x + self.mixer(self.norm(x), mask=mask)


class FM4NPP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = PointEmbedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, 3 * cfg.k)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """PyTorch default init for linears/conv, Mamba2 init for A, dt, D; out_proj scaled by
        1/sqrt(n_layers) as in mamba_ssm (GPT-2 style residual scaling); muP adjustments on top."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                m.reset_parameters()
            elif isinstance(m, nn.RMSNorm):
                nn.init.ones_(m.weight)
            elif hasattr(m, "reset_ssm_parameters"):
                m.reset_ssm_parameters()
                nn.init.ones_(m.norm.weight)
        for blk in self.blocks:
            blk.mixer.out_proj.weight.div_(math.sqrt(self.cfg.n_layers))
        if self.cfg.mup:
            from .mup import apply_mup_init

            apply_mup_init(self)

    def forward(self, coords, energy, mask=None, return_hidden=False):
        """coords (b, l, 3), energy (b, l), mask (b, l) bool True = real point (right padding).

        Returns preds (b, l, k, 3) and, if return_hidden, the input embedding followed by the
        residual stream after every block (list of n_layers + 1 tensors (b, l, d_model); the
        embedding first, as in HF transformers, so adapters can fall back on the inputs). Padding inputs are zeroed so that whatever
        they hold (even NaN) cannot leak into real points, forward or backward.
        """
        if mask is not None:
            coords = coords.masked_fill(~mask.unsqueeze(-1), 0.0)
            energy = energy.masked_fill(~mask, 0.0)
        x = self.embed(coords, energy)
        hidden = [x] if return_hidden else []
        for blk in self.blocks:
            x = blk(x, mask)
            if return_hidden:
                hidden.append(x)
        preds = self.head(self.norm_f(x)).unflatten(-1, (self.cfg.k, 3))
        return (preds, hidden) if return_hidden else preds

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
