"""Analytic parameter count and FLOPs of the FM4NPP backbone.

FLOPs count the multiply-adds of matmuls and convolutions (2 per MAC), the convention of
`torch.utils.flop_counter` and of C = 6ND: elementwise work (norms, exp, SiLU) is not
counted, and neither is the depthwise causal conv (elementwise shifted sums here, a fused
kernel on GPU; it would add 2 * conv_dim * d_conv per token, about 1 %). The SSD scan is
counted as executed by `fm4npp.model.ssd.ssd_chunked`, including the masked half of the
diagonal blocks and the padding of the last chunk. A bidirectional model runs two mixers
per block (the reversal is a gather: not counted); extra output heads count like the kNN head.
The subsystem embedding is a gather too: parameters, no FLOPs.
"""

from __future__ import annotations

import math

from .config import ModelConfig
from .ssd import MAX_CHUNKS_MATRIX


def _directions(cfg: ModelConfig) -> int:
    return 2 if cfg.bidirectional else 1


def count_params(cfg: ModelConfig) -> int:
    d, di, h, gn = cfg.d_model, cfg.d_inner, cfg.n_heads, cfg.ngroups * cfg.d_state
    conv_dim = di + 2 * gn
    b = int(cfg.proj_bias)
    mixer = (
        (d + b) * (2 * di + h)  # in_proj -> z, x, dt
        + (d + b) * 2 * gn  # bc_proj -> B, C
        + conv_dim * (cfg.d_conv + int(cfg.conv_bias))
        + 3 * h  # A_log, dt_bias, D
        + di  # gated norm weight
        + (di + b) * d  # out_proj
    )
    embed = 2 * d + (cfg.pos_dim + 1) * d + (d if cfg.mask_token else 0) + cfg.n_subsystems * d
    head = (d + 1) * (3 * cfg.k + sum(cfg.output_heads.values()))
    return embed + cfg.n_layers * (d + _directions(cfg) * mixer) + d + head



def ssd_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Forward matmul FLOPs of the chunked scan per real token of one sequence."""
    q, n, di, gn = cfg.chunk_size, cfg.d_state, cfg.d_inner, cfg.ngroups * cfg.d_state
    chunks = max(1, math.ceil(seq_len / q))
    padded = chunks * q
    per_padded_token = (
        2 * q * gn  # C B^T inside chunks
        + 2 * q * di  # (C B^T * decay) @ x dt
        + 2 * n * di  # chunk states B^T x
        + 2 * n * di  # chunk start state -> output through C
    )
    total = per_padded_token * padded
    if chunks <= MAX_CHUNKS_MATRIX:
        total += 2 * (chunks + 1) ** 2 * n * di  # inter-chunk decay matrix @ states
    return total / seq_len


def flops_per_token(cfg: ModelConfig, seq_len: int, backward: bool = True) -> float:
    """FLOPs per token of a forward (+ backward, the default) pass at sequence length seq_len.

    The backward pass costs twice the forward for every matmul with a trainable weight and a
    trainable input; the embedding's inputs are data, so it costs only its weight gradient.
    """
    d, di, h, gn = cfg.d_model, cfg.d_inner, cfg.n_heads, cfg.ngroups * cfg.d_state
    embed = 2 * d + 2 * cfg.pos_dim * d
    mixer = 2 * d * (2 * di + h) + 2 * d * 2 * gn + ssd_flops_per_token(cfg, seq_len) + 2 * di * d
    heads = 3 * cfg.k + sum(cfg.output_heads.values())
    rest = cfg.n_layers * _directions(cfg) * mixer + 2 * d * heads
    return (2 * embed + 3 * rest) if backward else (embed + rest)
