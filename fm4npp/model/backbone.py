"""FM4NPP: embedding -> pre-norm residual Mamba2 blocks -> RMSNorm -> linear kNN head.

Options (ModelConfig), all off by default, where the model is the paper's:
- ``bidirectional``: each block adds a second Mamba2 that reads the event backwards;
- ``mask_token``: a learned embedding replacing the inputs of points an objective hides;
- ``output_heads``: extra per-point linear heads beside the kNN head, for other objectives;
- ``n_subsystems``: each point's subsystem id embedded, zero for the TPC (embed.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import REFERENCE_SUBSYSTEM, ModelConfig
from .embed import PointEmbedding
from .mamba2 import Mamba2


def reversal_index(mask: torch.Tensor | None, b: int, l: int, device) -> torch.Tensor:
    """(b, l) positions that reverse each event's real points and leave its padding in place:
    position t < n maps to n - 1 - t, t >= n to itself (n = the event's real points). The map
    is its own inverse, and padding stays on the right, where causality keeps it from
    reaching real points in either direction."""
    t = torch.arange(l, device=device).expand(b, l)
    n = mask.sum(1, keepdim=True) if mask is not None else torch.full((b, 1), l, device=device)
    return torch.where(t < n, n - 1 - t, t)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class Block(nn.Module):
    """x + Mamba2(RMSNorm(x)), plus the backward scan of the same input when bidirectional.

    The backward Mamba2 has its own weights: in serialization order the two directions are
    physically different (outward vs inward in r), and the forward half stays exactly the
    causal block. The two are summed into the residual stream (as in Vision Mamba), which
    keeps every layer's state d_model wide, so every later layer and the downstream adapters
    see both directions without any change of width.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mixer = Mamba2(cfg)
        self.mixer_bwd = Mamba2(cfg) if cfg.bidirectional else None

    def mixers(self) -> list[Mamba2]:
        return [self.mixer] if self.mixer_bwd is None else [self.mixer, self.mixer_bwd]

    def scan_backward(self, h, mask=None, rev=None):
        """The backward branch on normalised input h: at each real point it depends only on
        that point and the later ones of its own event."""
        return _gather(self.mixer_bwd(_gather(h, rev), mask=mask), rev)

    def forward(self, x, mask=None, rev=None):
        h = self.norm(x)
        out = x + self.mixer(h, mask=mask)
        if self.mixer_bwd is not None:
            out = out + self.scan_backward(h, mask, rev)
        return out


class FM4NPP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = PointEmbedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, 3 * cfg.k)
        self.output_heads = nn.ModuleDict(
            {name: nn.Linear(cfg.d_model, size) for name, size in cfg.output_heads.items()})
        if cfg.mask_token:
            self.mask_token = nn.Parameter(torch.empty(cfg.d_model))
        else:
            self.register_parameter("mask_token", None)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """PyTorch default init for linears/conv, Mamba2 init for A, dt, D; out_proj scaled by
        1/sqrt(residual branches) as in mamba_ssm (GPT-2 style residual scaling); muP
        adjustments on top."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                m.reset_parameters()
            elif isinstance(m, nn.RMSNorm):
                nn.init.ones_(m.weight)
            elif hasattr(m, "reset_ssm_parameters"):
                m.reset_ssm_parameters()
                nn.init.ones_(m.norm.weight)
        branches = self.cfg.n_layers * (2 if self.cfg.bidirectional else 1)
        for blk in self.blocks:
            for mixer in blk.mixers():
                mixer.out_proj.weight.div_(math.sqrt(branches))
        self.embed.reset_subsystem()
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)  # BERT / MAE: small, not zero
        if self.cfg.mup:
            from .mup import apply_mup_init, width_mult

            apply_mup_init(self)
            for head in self.output_heads.values():  # readouts like the kNN head
                head.weight.mul_(1 / math.sqrt(width_mult(self.cfg)))

    def forward(self, coords, energy, mask=None, return_hidden=False, input_mask=None,
                return_heads=False, subsystem=None):
        """coords (b, l, 3), energy (b, l), mask (b, l) bool True = real point (right padding).

        Returns preds (b, l, k, 3) and, if return_hidden, the input embedding followed by the
        residual stream after every block (list of n_layers + 1 tensors (b, l, d_model); the
        embedding first, as in HF transformers, so adapters can fall back on the inputs). Padding inputs are zeroed so that whatever
        they hold (even NaN) cannot leak into real points, forward or backward.

        input_mask (b, l) bool, True = hidden point: its inputs are dropped and its embedding
        is the mask token (needs ModelConfig.mask_token). return_heads: instead of preds, a dict
        {"knn": preds, name: (b, l, size) for each of ModelConfig.output_heads}.

        subsystem (b, l) int: each point's id of fm4npp.data.schema.SUBSYSTEMS (None: all TPC;
        padding may hold anything; ignored by a model with n_subsystems = 0).
        """
        subsystem = self._subsystem_ids(subsystem, mask)
        if mask is not None:
            coords = coords.masked_fill(~mask.unsqueeze(-1), 0.0)
            energy = energy.masked_fill(~mask, 0.0)
        if input_mask is not None:
            if self.mask_token is None:
                raise ValueError("input_mask given but this model has no mask token "
                                 "(ModelConfig.mask_token=False)")
            # dropped, not only overwritten: no gradient or NaN reaches a hidden point's input
            coords = coords.masked_fill(input_mask.unsqueeze(-1), 0.0)
            energy = energy.masked_fill(input_mask, 0.0)
        x = self.embed(coords, energy, subsystem)
        if input_mask is not None:
            x = torch.where(input_mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        rev = (reversal_index(mask, x.shape[0], x.shape[1], x.device)
               if self.cfg.bidirectional else None)
        hidden = [x] if return_hidden else []
        for blk in self.blocks:
            x = blk(x, mask, rev)
            if return_hidden:
                hidden.append(x)
        h = self.norm_f(x)
        out = self.head(h).unflatten(-1, (self.cfg.k, 3))
        if return_heads:
            out = {"knn": out, **{name: head(h) for name, head in self.output_heads.items()}}
        return (out, hidden) if return_hidden else out

    def _subsystem_ids(self, subsystem, mask):
        if subsystem is None or self.embed.subsystem is None:
            return None
        subsystem = subsystem.long()
        if mask is not None:
            subsystem = subsystem.masked_fill(~mask, REFERENCE_SUBSYSTEM)
        bad = (subsystem < 0) | (subsystem >= self.cfg.n_subsystems)
        if bool(bad.any()):
            raise ValueError(f"subsystem ids {sorted(set(subsystem[bad].tolist()))[:5]} outside "
                             f"0..{self.cfg.n_subsystems - 1} (ModelConfig.n_subsystems)")
        return subsystem

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
