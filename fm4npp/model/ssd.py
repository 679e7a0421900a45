"""The state-space-duality (SSD) scan of Mamba2, in plain PyTorch.

The selective SSM with scalar-times-identity A per head (Dao & Gu 2024) is, per head,

    h_t = exp(dt_t * A) h_{t-1} + dt_t x_t B_t^T        h_t: (headdim P, d_state N)
    y_t = h_t C_t

`ssd_recurrent` runs exactly that, one step at a time (the reference). `ssd_chunked` computes
the same thing in chunks of Q steps, which turns almost all the work into batched matmuls:

  1. diagonal blocks: inside a chunk the map x -> y is a masked "attention"
     y_i = sum_{j<=i} (C_i . B_j) exp(a_i - a_j) dt_j x_j, with a the cumulative log decay;
  2. chunk states: the state each chunk leaves behind if it started from zero;
  3. inter-chunk recurrence: states at chunk starts, from a (chunks x chunks) decay matrix
     (or a loop over chunks when there are many);
  4. state -> output: each chunk reads its starting state through C, decayed to step i.

Shapes follow mamba_ssm: x (b, l, h, p), dt (b, l, h) (after softplus), A (h,) negative,
B and C (b, l, g, n) with heads split evenly over g groups, states (b, h, p, n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Up to this many chunks the inter-chunk recurrence is one matmul with a (chunks+1)^2 decay
# matrix; beyond it the quadratic cost outgrows a loop over chunks.
MAX_CHUNKS_MATRIX = 64


def _decay_t(a, masked=True):
    """Transposed exp(segsum): a (..., T) log decays -> (..., T, T) with
    [j, i] = exp(a_{j+1} + ... + a_i) for i >= j; for i < j 0 if masked, else 1 (cheaper,
    for callers that mask anyway).

    Each segment is summed directly (a masked cumsum) rather than as cumsum[i] - cumsum[j],
    which loses eps * |cumsum| to rounding in strongly decaying heads — more than the fp32
    tolerance against the recurrence allows. Rows j are contiguous so the cumsum runs along
    the last dimension (faster on CPU).
    """
    t = a.shape[-1]
    after = torch.ones(t, t, dtype=a.dtype, device=a.device).triu(1)  # [j, k] = 1 if k > j
    seg = (a.unsqueeze(-2) * after).cumsum(-1)
    if masked:
        seg = seg.masked_fill(after.T.bool(), float("-inf"))
    return seg.exp()


def _check_shapes(x, dt, A, B, C):
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    if dt.shape != (b, l, h) or A.shape != (h,):
        raise ValueError(f"dt must be {(b, l, h)} and A {(h,)}, got {tuple(dt.shape)}, {tuple(A.shape)}")
    if B.shape != (b, l, g, n) or C.shape != (b, l, g, n) or h % g:
        raise ValueError(f"B and C must be (b, l, g, n) with g dividing h={h}, got "
                         f"{tuple(B.shape)}, {tuple(C.shape)}")
    return b, l, h, p, g, n


def ssd_chunked(x, dt, A, B, C, chunk_size=32, initial_state=None, return_final_state=False):
    """Chunked SSD scan. Any length l (padded to a multiple of chunk_size inside).

    Returns y (b, l, h, p), and the state after the last step (b, h, p, n) if
    return_final_state. Padding uses dt = 0, which neither decays nor writes the state.
    """
    b, l, h, p, g, n = _check_shapes(x, dt, A, B, C)
    hg, Q = h // g, chunk_size
    pad = (-l) % Q
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    c = (l + pad) // Q

    # Head-major blocks (b, group, head-in-group, chunk, step, ...): every (head, chunk) block
    # is a contiguous matmul operand, and the chunks of a head are adjacent, so the chunk
    # states feed the inter-chunk recurrence without a permute. The per-step decays are folded
    # into B and C per head (d_state columns) rather than into x or y (headdim columns).
    a = (dt * A).view(b, c, Q, g, hg).permute(0, 3, 4, 1, 2)  # (b, g, hg, c, Q) log decay
    a_cum = a.cumsum(-1)
    dt_h = dt.view(b, c, Q, g, hg).permute(0, 3, 4, 1, 2)
    xdt = (x.view(b, c, Q, g, hg, p).permute(0, 3, 4, 1, 2, 5) * dt_h.unsqueeze(-1)).contiguous()
    Bc = B.view(b, c, Q, g, n).permute(0, 3, 1, 2, 4).unsqueeze(2)  # (b, g, 1, c, Q, n)
    Cc = C.view(b, c, Q, g, n).permute(0, 3, 1, 2, 4).unsqueeze(2)

    # 1. diagonal blocks: y_i = sum_{j<=i} (C_i . B_j) decay[j, i] x_j dt_j per head, computed
    # transposed ([source j, target i]) to match the layout of `_decay_t`.
    decay = _decay_t(a, masked=False)  # (b, g, hg, c, Q, Q); 1 where i < j
    scores = (Bc @ Cc.transpose(-1, -2)).triu()  # (b, g, 1, c, Q, Q), shared by a group's heads
    y = (scores * decay).transpose(-1, -2) @ xdt  # (b, g, hg, c, Q, p)

    # 2. chunk states (n, p): (B decayed to the chunk end)^T @ (x dt).
    decay_to_end = decay[..., -1:]  # [j] = exp(a_{j+1} + ... + a_{Q-1}), (b, g, hg, c, Q, 1)
    states = (Bc * decay_to_end).transpose(-1, -2) @ xdt  # (b, g, hg, c, n, p)

    # 3. states at the start of every chunk, and the final one.
    if initial_state is None:
        s0 = states.new_zeros(b, g, hg, 1, n, p)
    else:
        s0 = initial_state.view(b, g, hg, 1, p, n).transpose(-1, -2).to(states.dtype)
    chunk_decay = a_cum[..., -1]  # (b, g, hg, c)
    if c <= MAX_CHUNKS_MATRIX:
        u = torch.cat([s0, states], dim=3).view(b, g, hg, c + 1, n * p)
        w = _decay_t(F.pad(chunk_decay, (1, 0))).transpose(-1, -2)  # (b, g, hg, c+1, c+1)
        # The starts and the final state as two matmuls: each result is contiguous.
        starts = (w[..., :-1, :] @ u).view(b, g, hg, c, n, p)
        final = (w[..., -1:, :] @ u).view(b, g, hg, n, p)
    else:
        gate = chunk_decay.exp()[..., None, None]
        seq, cur = [], s0[:, :, :, 0]
        for i in range(c):
            seq.append(cur)
            cur = gate[:, :, :, i] * cur + states[:, :, :, i]
        starts, final = torch.stack(seq, dim=3), cur

    # 4. each chunk reads its starting state through C decayed to step i.
    c_decayed = (Cc * a_cum.exp().unsqueeze(-1)).reshape(-1, Q, n)
    y = torch.baddbmm(y.view(-1, Q, p), c_decayed, starts.reshape(-1, n, p)).view(b, g, hg, c, Q, p)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, c * Q, h, p)[:, :l]
    if return_final_state:
        return y, final.transpose(-1, -2).reshape(b, h, p, n)
    return y


def ssd_recurrent(x, dt, A, B, C, initial_state=None, return_final_state=False):
    """Reference: the SSM recurrence one step at a time (slow; for tests and benchmarks)."""
    b, l, h, p, g, n = _check_shapes(x, dt, A, B, C)
    Bh = B.repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    Ch = C.repeat_interleave(h // g, dim=2)
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state
    ys = []
    for t in range(l):
        gate = torch.exp(dt[:, t] * A)[..., None, None]  # (b, h, 1, 1)
        write = (dt[:, t, :, None] * x[:, t]).unsqueeze(-1) * Bh[:, t].unsqueeze(-2)
        state = gate * state + write
        ys.append((state @ Ch[:, t].unsqueeze(-1)).squeeze(-1))
    y = torch.stack(ys, dim=1)
    return (y, state) if return_final_state else y
