"""FM4NPP model: SSD scan vs the recurrence, padding, presets, FLOPs, muP, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from fm4npp.model import ssd as ssd_mod
from fm4npp.model.backbone import FM4NPP
from fm4npp.model.config import ModelConfig
from fm4npp.model.flops import count_params, flops_per_token
from fm4npp.model.io import from_pretrained, save_pretrained
from fm4npp.model.mup import param_groups
from fm4npp.model.schedule import warmup_cosine
from fm4npp.model.presets import PAPER_PARAMS, PRESETS, get_preset
from fm4npp.model.ssd import ssd_chunked, ssd_recurrent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ssd_inputs(b, l, h, p, g, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    x, B, C, s0 = r(b, l, h, p), r(b, l, g, n), r(b, l, g, n), r(b, h, p, n)
    dt = torch.nn.functional.softplus(r(b, l, h) - 2)  # ~0.01 .. 1, as after Mamba2's init
    A = -torch.exp(torch.rand(h, generator=gen, dtype=torch.float64) * 2.77)  # -1 .. -16
    return [x, dt, A, B, C, s0]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("l,chunk,matrix", [(100, 32, True), (37, 64, True), (130, 16, False)])
def test_ssd_chunked_matches_recurrence_forward_and_backward(l, chunk, matrix, monkeypatch):
    if not matrix:  # force the loop over chunks used for very long sequences
        monkeypatch.setattr(ssd_mod, "MAX_CHUNKS_MATRIX", 2)
    ref_in = [t.requires_grad_() for t in _ssd_inputs(2, l, 4, 8, 2, 6)]
    y_ref, s_ref = ssd_recurrent(*ref_in[:5], initial_state=ref_in[5], return_final_state=True)
    gen = torch.Generator().manual_seed(1)
    wy, ws = torch.randn(y_ref.shape, generator=gen), torch.randn(s_ref.shape, generator=gen)
    ((y_ref * wy).sum() + (s_ref * ws).sum()).backward()

    f32_in = [t.detach().float().requires_grad_() for t in ref_in]
    y, s = ssd_chunked(*f32_in[:5], chunk_size=chunk, initial_state=f32_in[5], return_final_state=True)
    ((y * wy.float()).sum() + (s * ws.float()).sum()).backward()

    assert y.shape == y_ref.shape and s.shape == s_ref.shape
    assert _rel(y, y_ref) < 1e-5 and _rel(s, s_ref) < 1e-5
    for name, a, b in zip("x dt A B C s0".split(), f32_in, ref_in):
        assert _rel(a.grad, b.grad) < 1e-5, name


def test_ssd_zero_length_padding_does_not_touch_state():
    x, dt, A, B, C, s0 = [t.float() for t in _ssd_inputs(1, 10, 2, 4, 1, 3)]
    _, s_a = ssd_chunked(x, dt, A, B, C, chunk_size=8, initial_state=s0, return_final_state=True)
    dt_pad = torch.cat([dt, torch.zeros(1, 5, 2)], dim=1)
    pad = lambda t: torch.cat([t, torch.randn(1, 5, *t.shape[2:])], dim=1)  # noqa: E731
    _, s_b = ssd_chunked(pad(x), dt_pad, A, pad(B), pad(C), chunk_size=8, initial_state=s0,
                         return_final_state=True)
    assert torch.allclose(s_a, s_b, rtol=1e-5, atol=1e-6)


def _tiny_cfg(**kw):
    return ModelConfig(**{**dict(d_model=16, n_layers=2, d_state=8, headdim=8, chunk_size=16), **kw})


def test_right_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = FM4NPP(_tiny_cfg())
    L, real = 45, [45, 30]
    coords, energy = torch.rand(2, L, 3), torch.randn(2, L)
    mask = torch.arange(L)[None] < torch.tensor(real)[:, None]
    coords[1, 30:] = float("nan")  # whatever sits in the padding must not leak
    energy[1, 30:] = 1e6
    preds, hidden = model(coords, energy, mask=mask, return_hidden=True)
    alone = model(coords[1:, :30], energy[1:, :30])
    assert torch.allclose(preds[1, :30], alone[0], atol=1e-5)
    assert torch.isfinite(preds[mask]).all()
    assert len(hidden) == 3 and hidden[0].shape == (2, L, 16)
    assert preds.shape == (2, L, 10, 3)
    # Gradients stay finite with NaN padding.
    preds[mask].square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mamba2_init():
    m = FM4NPP(_tiny_cfg(d_model=64, headdim=8)).blocks[0].mixer
    A = -torch.exp(m.A_log)
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert (A <= -1).all() and (A >= -16).all()
    assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    assert torch.equal(m.D, torch.ones_like(m.D))


def test_presets_match_table1_and_instantiate():
    for name, target in PAPER_PARAMS.items():
        n = count_params(PRESETS[name])
        assert abs(n / target - 1) < 0.10, (name, n, target)
    for name in ("m1", "m4", "w8", "w16", "w32", "w64", "w128"):  # the analytic count is exact
        with torch.device("meta"):
            assert FM4NPP(PRESETS[name]).num_params() == count_params(PRESETS[name]), name
    with pytest.raises(KeyError, match="unknown model preset"):
        get_preset("m7")


@pytest.mark.parametrize("L,chunk", [(200, 64), (150, 16)])
def test_flops_match_torch_flop_counter(L, chunk):
    from torch.utils.flop_counter import FlopCounterMode

    cfg = get_preset("w16", chunk_size=chunk)
    model = FM4NPP(cfg)
    coords, energy = torch.rand(1, L, 3), torch.randn(1, L)
    with FlopCounterMode(display=False) as counter:
        model(coords, energy).square().mean().backward()
    measured = counter.get_total_flops() / L
    assert abs(flops_per_token(cfg, L) / measured - 1) < 0.10
    with FlopCounterMode(display=False) as counter:
        model(coords, energy)
    assert abs(flops_per_token(cfg, L, backward=False) / (counter.get_total_flops() / L) - 1) < 0.10


def test_save_load_roundtrip_and_strict_errors(tmp_path):
    torch.manual_seed(0)
    model = FM4NPP(_tiny_cfg())
    extra = {"bins_sha256": "ab" * 32, "norm": {"energy_mean": 250.0, "energy_std": 80.0}}
    save_pretrained(model, tmp_path / "m", extra=extra)
    loaded, extra2 = from_pretrained(tmp_path / "m")
    assert extra2 == extra and loaded.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    coords, energy = torch.rand(1, 20, 3), torch.randn(1, 20)
    assert torch.equal(model(coords, energy), loaded(coords, energy))

    # Weights that do not fit the config: a clear error naming the tensor.
    save_pretrained(FM4NPP(_tiny_cfg(d_state=4)), tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").replace(tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match="bc_proj.weight"):
        from_pretrained(tmp_path / "m")
    save_pretrained(model, tmp_path / "other")
    meta = json.loads((tmp_path / "other" / "config.json").read_text())
    meta["model_config"]["n_hidden"] = 3
    (tmp_path / "other" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="n_hidden"):
        from_pretrained(tmp_path / "other")
    with pytest.raises(FileNotFoundError):
        from_pretrained(tmp_path / "nowhere")


def test_mup_groups_keep_lr_ratios_under_schedulers():
    cfg = _tiny_cfg(d_model=64, mup=True, mup_base_width=16)
    model = FM4NPP(cfg)
    groups = param_groups(model, base_lr=1e-3, weight_decay=0.01)
    n_grouped = sum(p.numel() for g in groups for p in g["params"])
    assert n_grouped == model.num_params()
    scale = {g["name"]: g["lr_scale"] for g in groups}
    assert scale["hidden"] == pytest.approx(0.25) and scale["vector"] == 1.0
    assert {g["name"]: g["weight_decay"] for g in groups}["vector"] == 0.0
    opt = torch.optim.AdamW(groups)
    for sched in (torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 3, 10)),
                  torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)):
        for _ in range(5):
            opt.step()
            sched.step()
        for g in opt.param_groups:
            assert g["lr"] / opt.param_groups[0]["lr"] == pytest.approx(g["lr_scale"] / opt.param_groups[0]["lr_scale"])

    # At the base width muP is the standard parameterization.
    torch.manual_seed(0)
    sp = FM4NPP(_tiny_cfg())
    torch.manual_seed(0)
    mp = FM4NPP(_tiny_cfg(mup=True, mup_base_width=16))
    assert all(torch.equal(a, b) for a, b in zip(sp.parameters(), mp.parameters()))
    assert all(g["lr_scale"] == 1.0 for g in param_groups(mp, 1e-3))


def test_model_info_cli(capsys):
    from fm4npp.cli import main

    assert main(["model", "info", "--preset", "m2", "--seq-len", "1024"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == count_params(PRESETS["m2"]) and info["flops_per_token"] > 6 * info["params"]
    assert main(["model", "info", "--preset", "nope"]) != 0
    # the bidirectional backbone: the count of a real model with a second mixer per block
    assert main(["model", "info", "--preset", "w16", "--bidirectional"]) == 0
    bi = json.loads(capsys.readouterr().out)
    assert bi["bidirectional"] and bi["params"] == sum(
        p.numel() for p in FM4NPP(get_preset("w16", bidirectional=True)).parameters())
    assert main(["model", "info", "--preset", "w16"]) == 0
    uni = json.loads(capsys.readouterr().out)
    assert 1.8 < bi["flops_per_token"] / uni["flops_per_token"] < 2.0  # the embedding is shared


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_kernels_match_pytorch_path():
    pytest.importorskip("mamba_ssm")
    torch.manual_seed(0)
    cfg = get_preset("m1", chunk_size=64)
    model = FM4NPP(cfg).cuda()
    coords, energy = torch.rand(2, 300, 3, device="cuda"), torch.randn(2, 300, device="cuda")
    mask = torch.ones(2, 300, dtype=torch.bool, device="cuda")
    mask[1, 250:] = False
    fused = model(coords, energy, mask)
    model.cfg.use_fused_kernels = False
    plain = model(coords, energy, mask)
    assert _rel(fused[mask], plain[mask]) < 1e-3


def test_causal_conv_matches_conv1d_with_gradients():
    from fm4npp.model.mamba2 import _CausalConvSiLU

    gen = torch.Generator().manual_seed(0)
    x, bc = torch.randn(2, 13, 5, generator=gen, dtype=torch.float64), torch.randn(2, 13, 3, generator=gen, dtype=torch.float64)
    w, bias = torch.randn(8, 4, generator=gen, dtype=torch.float64), torch.randn(8, generator=gen, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (x, bc, w, bias)]
    assert torch.autograd.gradcheck(_CausalConvSiLU.apply, leaves)
    ref = torch.nn.functional.conv1d(torch.cat([x, bc], -1).transpose(1, 2), w.unsqueeze(1), bias,
                                     padding=3, groups=8)[..., :13].transpose(1, 2)
    assert torch.allclose(_CausalConvSiLU.apply(*leaves), torch.nn.functional.silu(ref))


def test_compiled_mixers_match_eager_forward_backward_and_padding():
    """compile_mixers (torch.compile of the Mamba2 forward) computes what the eager model does,
    with gradients, on a right-padded batch. One shape: every new length is a new compile
    (~1 min; with dynamic shapes a second length took 4 min), so one is what a test affords."""
    import copy

    from fm4npp.model.mamba2 import compile_mixers

    torch.manual_seed(0)
    eager = FM4NPP(_tiny_cfg())
    compiled = compile_mixers(copy.deepcopy(eager))
    L, real = 64, [64, 37]
    coords, energy = torch.rand(2, L, 3), torch.randn(2, L)
    mask = torch.arange(L)[None] < torch.tensor(real)[:, None]
    outs = []
    for model in (eager, compiled):
        pred = model(coords, energy, mask=mask)
        pred[mask].square().mean().backward()
        outs.append((pred[mask], {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (pe, ge), (pc, gc) = outs
    assert _rel(pc, pe) < 1e-5
    assert ge.keys() == gc.keys() and len(ge) > 10
    for n in ge:
        assert _rel(gc[n], ge[n]) < 1e-4, n
