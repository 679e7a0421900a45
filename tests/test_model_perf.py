"""The CPU fast paths of the Mamba2 mixer against plain-autograd references (fp64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fm4npp.model.mamba2 import GatedRMSNorm, Mamba2, _ConvSiLU
from fm4npp.model.presets import get_preset
from fm4npp.model.ssd import ssd_chunked

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reference_mixer(m: Mamba2, u, mask):
    """The mixer as two projections, F.conv1d and autograd through the gated norm."""
    cfg = m.cfg
    b, l, _ = u.shape
    di, gn, h = cfg.d_inner, cfg.ngroups * cfg.d_state, cfg.n_heads
    z, x, dt = m.in_proj(u).split([di, di, h], dim=-1)
    dt = F.softplus(dt + m.dt_bias) * mask.unsqueeze(-1).to(u.dtype)
    xbc = torch.cat([x, m.bc_proj(u)], dim=-1).transpose(1, 2)
    xbc = F.silu(F.conv1d(xbc, m.conv1d.weight, m.conv1d.bias, padding=cfg.d_conv - 1,
                          groups=m.conv_dim)[..., :l]).transpose(1, 2)
    x, B, C = xbc.split([di, gn, gn], dim=-1)
    x = x.reshape(b, l, h, cfg.headdim)
    A = -torch.exp(m.A_log.float()).to(u.dtype)  # as the mixer: A in fp32
    y = ssd_chunked(x, dt, A, B.reshape(b, l, cfg.ngroups, -1),
                    C.reshape(b, l, cfg.ngroups, -1), chunk_size=cfg.chunk_size)
    y = (y + x * m.D.unsqueeze(-1)).reshape(b, l, di) * F.silu(z)
    y = y.view(b, l, cfg.ngroups, -1)
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
    return m.out_proj(y.view(b, l, di) * m.norm.weight)


@pytest.mark.parametrize("bias,ngroups", [(False, 1), (True, 2)])
def test_mixer_fast_path_matches_reference_with_gradients(bias, ngroups):
    torch.manual_seed(0)
    cfg = get_preset("w32", proj_bias=bias, ngroups=ngroups, chunk_size=16)
    m = Mamba2(cfg).double()
    with torch.no_grad():  # non-trivial norm weight and D, so their gradients are tested too
        m.norm.weight.uniform_(0.5, 1.5)
        m.D.uniform_(0.5, 1.5)
    u = torch.randn(2, 45, cfg.d_model, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 30:] = False
    gy = torch.randn(2, 45, cfg.d_model, dtype=torch.float64)
    grads = []
    for fn in (lambda: m(u, mask=mask), lambda: _reference_mixer(m, u, mask)):
        m.zero_grad(set_to_none=True)
        u.grad = None
        out = fn()
        out.backward(gy)
        grads.append((out.detach(), u.grad, {k: p.grad for k, p in m.named_parameters()}))
    (y, gu, gp), (y_ref, gu_ref, gp_ref) = grads
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gu, gu_ref, rtol=1e-10, atol=1e-12)
    assert gp.keys() == gp_ref.keys()
    for k in gp:
        torch.testing.assert_close(gp[k], gp_ref[k], rtol=1e-10, atol=1e-12, msg=k)


def test_conv_on_a_strided_view_gradcheck():
    gen = torch.Generator().manual_seed(0)
    full = torch.randn(2, 11, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)
    conv = lambda t, *a: _ConvSiLU.apply(t[..., 3:10], *a)  # noqa: E731  strided, as the projection's slice
    assert not full[..., 3:10].is_contiguous()
    torch.testing.assert_close(conv(full, w, bias), _ConvSiLU.apply(full[..., 3:10].contiguous(), w, bias))
    assert torch.autograd.gradcheck(conv, (full, w, bias))
    assert torch.autograd.gradcheck(conv, (full, w, None))


@pytest.mark.parametrize("groups", [1, 3])
def test_gated_rmsnorm_gradcheck(groups):
    gen = torch.Generator().manual_seed(0)
    norm = GatedRMSNorm(12, groups=groups).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    y, z = (torch.randn(2, 5, 12, generator=gen, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    assert torch.autograd.gradcheck(norm, (y, z))
