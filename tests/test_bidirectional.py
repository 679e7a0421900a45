"""The bidirectional backbone (issue 19): the backward scan of each event's real points only,
padding kept out, shapes, parameter and FLOP counts, downstream features, and the refusal of
objectives whose targets it would read."""

from __future__ import annotations

import pytest
import torch

from fm4npp.model.backbone import FM4NPP, Block, reversal_index
from fm4npp.model.config import ModelConfig
from fm4npp.model.flops import count_params, flops_per_token


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw):
    base = dict(d_model=16, n_layers=2, d_state=8, headdim=8, chunk_size=4, k=3, bidirectional=True)
    return ModelConfig(**{**base, **kw})


def test_reversal_index_reverses_real_points_and_keeps_padding():
    mask = torch.arange(6)[None] < torch.tensor([6, 3, 5])[:, None]
    idx = reversal_index(mask, 3, 6, "cpu")
    assert idx.tolist() == [[5, 4, 3, 2, 1, 0], [2, 1, 0, 3, 4, 5], [4, 3, 2, 1, 0, 5]]
    assert torch.equal(idx.gather(1, idx), torch.arange(6).expand(3, 6))  # its own inverse
    assert reversal_index(None, 1, 4, "cpu").tolist() == [[3, 2, 1, 0]]


def test_backward_scan_sees_only_later_points_of_its_own_event():
    torch.manual_seed(0)
    cfg = _cfg()
    blk = Block(cfg)
    L, n = 14, 9  # event 1 has 9 real points, then padding; chunk_size 4 spans several chunks
    mask = torch.arange(L)[None] < torch.tensor([L, n])[:, None]
    rev = reversal_index(mask, 2, L, "cpu")
    h = torch.randn(2, L, cfg.d_model)

    def back(x):
        with torch.no_grad():
            return blk.scan_backward(x, mask, rev)

    ref = back(h)

    def changed(pos_event, pos):
        x = h.clone()
        x[pos_event, pos] += 3.0
        return (back(x) - ref).abs().amax(-1)  # (2, L)

    d = changed(1, 6)  # a later point: reaches points 0..6 of its event, nothing after it
    assert (d[1, :7] > 1e-4).all() and d[1, 7:n].max() < 1e-6 and d[0].max() < 1e-6
    d = changed(1, 3)  # an earlier point does not reach the points after it
    assert d[1, 4:n].max() < 1e-6 and d[1, 3] > 1e-4
    x = h.clone()
    x[1, n:] = 1e3  # whatever sits in the padding
    assert (back(x)[1, :n] - ref[1, :n]).abs().max() < 1e-6
    # the padding-free run of the event alone gives the same backward features
    alone = Block.scan_backward(blk, h[1:, :n], None, reversal_index(None, 1, n, "cpu"))
    assert torch.allclose(alone[0], ref[1, :n], atol=1e-5)
    # and the forward branch is the causal one, untouched
    assert torch.allclose(blk(h, mask, rev) - h - blk.scan_backward(blk.norm(h), mask, rev),
                          blk.mixer(blk.norm(h), mask=mask), atol=1e-5)


def test_bidirectional_model_sees_the_whole_event_but_not_padding():
    torch.manual_seed(0)
    model = FM4NPP(_cfg())
    causal = FM4NPP(_cfg(bidirectional=False))
    L, real = 20, [20, 12]
    coords, energy = torch.rand(2, L, 3), torch.randn(2, L)
    mask = torch.arange(L)[None] < torch.tensor(real)[:, None]
    padded_coords = coords.clone()
    padded_coords[1, 12:] = float("nan")
    preds, hidden = model(padded_coords, energy, mask=mask, return_hidden=True)
    alone = model(coords[1:, :12], energy[1:, :12])
    assert torch.allclose(preds[1, :12], alone[0], atol=1e-5)
    assert torch.isfinite(preds[mask]).all()
    assert len(hidden) == 3 and all(hs.shape == (2, L, 16) for hs in hidden)
    assert preds.shape == (2, L, 3, 3)

    later = coords.clone()
    later[1, 11] += 0.3  # the last real point of event 1
    assert (model(later, energy, mask)[1, 0] - preds[1, 0]).abs().max() > 1e-5  # seen from point 0
    assert torch.allclose(causal(later, energy, mask)[1, :11], causal(coords, energy, mask)[1, :11])
    preds[mask].square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("extra", [{}, {"mask_token": True, "output_heads": {"masked": 4}},
                                   {"mup": True, "mup_base_width": 8}])
def test_parameter_count_is_exact(extra):
    from fm4npp.model.mup import param_groups

    cfg = _cfg(**extra)
    model = FM4NPP(cfg)
    assert model.num_params() == count_params(cfg)
    one_way = FM4NPP(_cfg(bidirectional=False, **extra)).num_params()
    mixer = sum(p.numel() for p in model.blocks[0].mixer.parameters())
    assert model.num_params() - one_way == cfg.n_layers * mixer  # one more Mamba2 per block
    assert sum(p.numel() for g in param_groups(model, 1e-3) for p in g["params"]) == model.num_params()


def test_flops_count_the_second_scan():
    from torch.utils.flop_counter import FlopCounterMode

    from fm4npp.model.presets import get_preset

    L = 150
    cfg = get_preset("w16", chunk_size=16, bidirectional=True, output_heads={"masked": 4})
    model = FM4NPP(cfg)
    coords, energy = torch.rand(1, L, 3), torch.randn(1, L)
    with FlopCounterMode(display=False) as counter:
        out = model(coords, energy, return_heads=True)
        (out["knn"].square().mean() + out["masked"].square().mean()).backward()
    assert abs(flops_per_token(cfg, L) / (counter.get_total_flops() / L) - 1) < 0.10
    one_way = get_preset("w16", chunk_size=16, output_heads={"masked": 4})
    assert 1.8 < flops_per_token(cfg, L) / flops_per_token(one_way, L) < 2.0


def test_only_objectives_without_later_targets_take_a_bidirectional_backbone(tmp_path):
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.model_spec import model_config_for

    base = dict(preset="w8", data=str(tmp_path), bidirectional=True)
    for name in ("knn", "knn_energy", "hybrid"):
        with pytest.raises(ValueError, match="leak its own targets.*bidirectional works with: masked, supervised"):
            PretrainConfig(objective=name, **base).resolved()
    cfg = PretrainConfig(objective="masked", **base).resolved()
    mcfg = model_config_for(cfg, 10)
    assert mcfg.bidirectional and mcfg.mask_token and mcfg.output_heads == {"masked": 4}
    assert not model_config_for(PretrainConfig(preset="w8"), 10).bidirectional


def test_downstream_features_of_a_bidirectional_backbone():
    import numpy as np

    from fm4npp.downstream.features import FrozenFMSource, backbone_states, pad_points

    torch.manual_seed(0)
    model = FM4NPP(_cfg()).eval()
    rng = np.random.default_rng(0)
    events = [{"coords": rng.random((n, 3)).astype(np.float32),
               "energy": rng.normal(size=n).astype(np.float32)} for n in (7, 12)]
    states = backbone_states(model, events, batch_size=2)
    assert [tuple(s.shape) for s in states] == [(7, 3, 16), (12, 3, 16)]
    solo = backbone_states(model, events[:1], batch_size=1)[0]
    assert torch.allclose(solo.float(), states[0].float(), atol=2e-3)  # padding-free: the same
    later = [dict(events[0], energy=events[0]["energy"] + np.eye(7, dtype=np.float32)[6])]
    moved = backbone_states(model, later, batch_size=1)[0]
    assert (moved[0, 1:].float() - solo[0, 1:].float()).abs().max() > 1e-3  # point 0 sees point 6
    src = FrozenFMSource(range(3), 16, whiten_eps=0.0)
    feats = src({"states": pad_points(states, dtype=torch.float32)})
    assert feats.shape == (2, 12, 16)
