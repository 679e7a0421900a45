"""The Mamba2 mixer: in-projection, causal depthwise conv, SSD scan, gated RMSNorm, out-projection.

On CUDA with `mamba_ssm` (and `causal_conv1d`) installed, the conv and the scan run in their
fused kernels; everywhere else in plain PyTorch (`fm4npp.model.ssd`). Both are imported lazily
so that importing this module never needs a GPU package.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .ssd import ssd_chunked


def _fused_ops():
    """(mamba_chunk_scan_combined, causal_conv1d_fn or None), or None if mamba_ssm is missing."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or a broken CUDA/triton install
        return None
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:
        causal_conv1d_fn = None
    return mamba_chunk_scan_combined, causal_conv1d_fn


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * silu(z)) over groups of the channels (Mamba2's norm_before_gate=False)."""

    def __init__(self, dim: int, groups: int = 1, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.groups, self.eps = groups, eps

    def forward(self, y, z):
        return _GatedRMSNormFn.apply(y, z, self.weight, self.groups, self.eps)


class _GatedRMSNormFn(torch.autograd.Function):
    """GatedRMSNorm with a hand-written backward: autograd through the seven elementwise ops
    and their broadcasts makes about twice the passes over (b, l, d_inner) that this does."""

    @staticmethod
    def forward(ctx, y, z, weight, groups, eps):
        gate = F.silu(z)
        v = (y * gate).unflatten(-1, (groups, -1))
        r = torch.rsqrt(torch.linalg.vecdot(v, v).unsqueeze(-1) / v.shape[-1] + eps)
        normed = (v * r).flatten(-2)
        ctx.save_for_backward(y, z, gate, normed, r, weight)
        ctx.groups = groups
        return normed * weight

    @staticmethod
    def backward(ctx, grad):
        y, z, gate, normed, r, weight = ctx.saved_tensors
        gw = (grad * normed).sum(tuple(range(grad.dim() - 1)))
        gn = (grad * weight).unflatten(-1, (ctx.groups, -1))
        nv = normed.unflatten(-1, (ctx.groups, -1))
        # d/dv of v * r(v): r (gn - nv <gn, nv> / width), per group
        m = torch.linalg.vecdot(gn, nv).unsqueeze(-1) / nv.shape[-1]
        gv = (torch.addcmul(gn, nv, m, value=-1) * r).flatten(-2)
        return gv * gate, torch.ops.aten.silu_backward(gv * y, z), gw, None, None


class Mamba2(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, di, n, g, h = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.ngroups, cfg.n_heads
        self.conv_dim = di + 2 * g * n
        # Two projections of the same input instead of mamba's one: B and C get their own
        # muP-SSM init/lr scaling (fm4npp.model.mup), which needs a separate parameter.
        self.in_proj = nn.Linear(d, 2 * di + h, bias=cfg.proj_bias)  # -> z, x, dt
        self.bc_proj = nn.Linear(d, 2 * g * n, bias=cfg.proj_bias)  # -> B, C
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.d_conv, groups=self.conv_dim,
                                padding=cfg.d_conv - 1, bias=cfg.conv_bias)
        self.A_log = nn.Parameter(torch.empty(h))
        self.dt_bias = nn.Parameter(torch.empty(h))
        self.D = nn.Parameter(torch.empty(h))
        self.norm = GatedRMSNorm(di, groups=g, eps=cfg.norm_eps)
        self.out_proj = nn.Linear(di, d, bias=cfg.proj_bias)
        self.compiled = False  # set by compile_mixers
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """Mamba2 init: A ~ U[1, 16] (stored as log), dt log-uniform, dt_bias = softplus^-1(dt), D = 1."""
        cfg = self.cfg
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(cfg.a_init_min, cfg.a_init_max).log())
        lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand_like(self.dt_bias) * (hi - lo) + lo).clamp(min=cfg.dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.D.fill_(1.0)

    def forward(self, u, mask=None, initial_state=None, return_final_state=False):
        """u (b, l, d_model) -> (b, l, d_model). mask (b, l) bool, True = real token.

        Masked (padding) steps get dt = 0: they neither decay nor write the SSM state, so the
        final state is the one after the last real token. Causality already keeps padding on
        the right from reaching real tokens. Compiled after :func:`compile_mixers` (not on
        CUDA, where the fused kernels run).
        """
        fn = _compiled_forward() if self.compiled and not u.is_cuda else Mamba2._forward
        return fn(self, u, mask, initial_state, return_final_state)

    def _forward(self, u, mask, initial_state, return_final_state):
        cfg = self.cfg
        b, l, _ = u.shape
        di, g, n, h, p = cfg.d_inner, cfg.ngroups, cfg.d_state, cfg.n_heads, cfg.headdim
        z, x, dt = self.in_proj(u).split([di, di, h], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        if mask is not None:
            dt = dt * mask.unsqueeze(-1).to(dt.dtype)
        A = -torch.exp(self.A_log.float())

        fused = _fused_ops() if (u.is_cuda and cfg.use_fused_kernels) else None
        xbc = self._conv(x, self.bc_proj(u), fused[1] if fused else None)
        x, B, C = xbc.split([di, g * n, g * n], dim=-1)
        x = x.reshape(b, l, h, p)
        B, C = B.reshape(b, l, g, n), C.reshape(b, l, g, n)
        if fused is not None:
            out = fused[0](x, dt, A, B, C, chunk_size=cfg.fused_chunk_size, D=None,
                           initial_states=initial_state, return_final_states=return_final_state)
        else:
            out = ssd_chunked(x, dt.to(x.dtype), A.to(x.dtype), B, C, chunk_size=cfg.chunk_size,
                              initial_state=initial_state, return_final_state=return_final_state)
        y, final = out if return_final_state else (out, None)
        y = torch.addcmul(y, x, self.D.to(x.dtype).unsqueeze(-1))
        y = self.out_proj(self.norm(y.reshape(b, l, di), z))
        return (y, final) if return_final_state else y

    def _conv(self, x, bc, causal_conv1d_fn=None):
        """SiLU(causal depthwise conv over time) of the channels [x, bc]; (b, l, c) -> (b, l, c)."""
        w = self.conv1d.weight.squeeze(1)  # (c, d_conv)
        xbc = torch.cat([x, bc], dim=-1)
        if causal_conv1d_fn is not None:
            return causal_conv1d_fn(xbc.transpose(1, 2), w, self.conv1d.bias,
                                    activation="silu").transpose(1, 2)
        return _ConvSiLU.apply(xbc, w, self.conv1d.bias)


@functools.cache
def _compiled_forward():
    """Mamba2._forward through torch.compile (inductor), made once per process: its one graph
    serves every mixer of a model (the guards are on shapes and types, not on the module)."""
    return torch.compile(Mamba2._forward, dynamic=False)


def compile_mixers(model: nn.Module) -> nn.Module:
    """Run every Mamba2 mixer of `model` compiled: on CPU the fused elementwise work of the SSD
    and the projections made an m2 training step at L = 2048 ~20 % faster (benchmarks/model.py).
    Each sequence length is its own compile (~1 min on these cores; dynamic shapes were slower
    still), so it pays for fixed-length batches only: pretraining pads each batch to its longest
    event and does not use it. Returns `model`."""
    for m in model.modules():
        if isinstance(m, Mamba2):
            m.compiled = True
    return model


class _CausalConvSiLU:
    """`_ConvSiLU` of the channels [x, bc] given apart (the two-input form the tests call)."""

    @staticmethod
    def apply(x, bc, w, bias):
        return _ConvSiLU.apply(torch.cat([x, bc], dim=-1), w, bias)


class _ConvSiLU(torch.autograd.Function):
    """SiLU(bias + sum_s w[:, k-1-s] * x[t - s]) over shifts s < k = d_conv, x[t < 0] = 0.

    The conv as d_conv shifted multiply-adds on time slices (no padded copy of the input,
    which may be a strided view), with a hand-written backward: on CPU several times faster
    than F.conv1d's depthwise backward or autograd through the shifted sums.
    """

    @staticmethod
    def forward(ctx, x, w, bias):
        l, k = x.shape[1], w.shape[1]
        pre = x * w[:, k - 1] if bias is None else torch.addcmul(bias, x, w[:, k - 1])
        for s in range(k - 1, 0, -1):
            pre[:, s:].addcmul_(x[:, :l - s], w[:, k - 1 - s])
        ctx.save_for_backward(x, w, pre)
        ctx.has_bias = bias is not None
        return F.silu(pre)

    @staticmethod
    def backward(ctx, grad):
        x, w, pre = ctx.saved_tensors
        l, k = x.shape[1], w.shape[1]
        g = torch.ops.aten.silu_backward(grad.contiguous(), pre)
        gx = g * w[:, k - 1]
        gw = torch.empty_like(w)
        gw[:, k - 1] = (g * x).sum((0, 1))
        for s in range(1, k):
            gx[:, :l - s].addcmul_(g[:, s:], w[:, k - 1 - s])
            gw[:, k - 1 - s] = (g[:, s:] * x[:, :l - s]).sum((0, 1))
        gb = g.sum((0, 1)) if ctx.has_bias else None
        return gx, gw, gb
