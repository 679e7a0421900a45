"""Maximal update parameterization (muP) for the Mamba2 backbone, for Adam(W).

Every parameter falls in one class; width enters through m = d_model / cfg.mup_base_width.
At m = 1 muP and the standard parameterization (SP) are the same model and optimizer, so
hyper-parameters tuned at the base width (the paper: m3, width 256) transfer to the others.

  class    parameters                              init std            Adam lr     weight decay
  input    embedding linears (fan-in fixed: 1, 63) SP                  x 1         yes
  hidden   in_proj (z, x, dt), out_proj            SP (1/sqrt fan-in)  x 1/m       yes
  ssm_bc   bc_proj (the SSM's W_B and W_C)         SP (1/sqrt fan-in)  x BC rule   yes
  output   head                                    SP x m^-1/2         x 1/m       yes
  vector   norms, biases, conv, A_log, dt_bias, D  SP                  x 1         no

W_B, W_C follow muP-SSM (Vankadara et al. 2024; the paper's appendix): with the state size
N_x fixed across presets their init is sigma ~ 1/sqrt(N_u), as SP, and their learning rate
follows `BC_LR_EXPONENT` (lr ~ m^-BC_LR_EXPONENT); see benchmarks/mup_coord_check.py for the
check that activations stay flat across widths.

Learning-rate scaling lives in the optimizer's param groups: each group has `lr = base_lr *
lr_scale` and keeps `lr_scale`. Schedulers that multiply every group's initial lr by a factor
(LambdaLR, CosineAnnealingLR with eta_min=0, OneCycle...) keep the ratios intact.
"""

from __future__ import annotations

import math

import torch.nn as nn

# Adam learning rate of W_B, W_C scales as m^-BC_LR_EXPONENT. A matrix whose fan-in grows
# with width needs lr ~ 1/fan-in under Adam for a Theta(1) change of its output, whatever its
# fan-out; the coordinate check confirms 1.0 (0.5, the SGD-style exponent, drifts).
BC_LR_EXPONENT = 1.0

CLASSES = ("input", "hidden", "ssm_bc", "output", "vector")


def width_mult(cfg) -> float:
    return cfg.d_model / cfg.mup_base_width


def param_class(name: str, p) -> str:
    if p.ndim < 2 or ".conv1d." in name:
        return "vector"  # includes the depthwise conv: its fan-in is d_conv, not the width
    if name.startswith("embed."):
        return "input"
    if name.startswith("head."):
        return "output"
    if name.endswith("bc_proj.weight"):
        return "ssm_bc"
    return "hidden"


def lr_scales(cfg) -> dict[str, float]:
    """Learning-rate multiplier per class (all 1 without muP)."""
    if not cfg.mup:
        return dict.fromkeys(CLASSES, 1.0)
    m = width_mult(cfg)
    return {"input": 1.0, "hidden": 1 / m, "ssm_bc": m ** -BC_LR_EXPONENT, "output": 1 / m,
            "vector": 1.0}


def apply_mup_init(model: nn.Module) -> None:
    """Scale the muP-specific inits in place (called by FM4NPP.reset_parameters)."""
    m = width_mult(model.cfg)
    model.head.weight.data.mul_(1 / math.sqrt(m))


def param_groups(model: nn.Module, base_lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer param groups: one per class present, each with lr = base_lr * lr_scale.

    Without muP every lr_scale is 1 and the classes only decide weight decay (none on
    vectors, as in mamba_ssm).
    """
    scales = lr_scales(model.cfg)
    buckets: dict[str, list] = {c: [] for c in CLASSES}
    for name, p in model.named_parameters():
        if p.requires_grad:
            buckets[param_class(name, p)].append(p)
    return [
        {"params": ps, "name": c, "lr": base_lr * scales[c], "lr_scale": scales[c],
         "weight_decay": 0.0 if c == "vector" else weight_decay}
        for c, ps in buckets.items() if ps
    ]

