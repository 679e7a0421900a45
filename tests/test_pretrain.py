"""Fast pretraining tests (no Ray): config, loss, schedule, data order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fm4npp.model.schedule import warmup_cosine
from fm4npp.pretrain.config import PretrainConfig
from fm4npp.pretrain.sources import global_batch_indices
from fm4npp.pretrain.loss import per_event_mse, pretrain_loss, trivial_predictions


def test_unknown_key_and_preset_list_valid_ones(tmp_path):
    with pytest.raises(KeyError, match="valid keys: .*'lr'"):
        PretrainConfig.from_dict({"lrr": 1.0})
    with pytest.raises(KeyError, match="valid keys"):
        PretrainConfig().with_overrides(["nope=3"])
    with pytest.raises(KeyError, match="valid presets: .*'w16'"):
        PretrainConfig(preset="m99", data=str(tmp_path)).resolved()


def test_overrides_are_typed_and_run_name_is_stable(tmp_path):
    cfg = PretrainConfig(data=str(tmp_path)).with_overrides(
        ["lr=1e-3", "steps=20", "difficulty_weighting=off", "mup=on"])
    assert cfg.lr == 1e-3 and cfg.steps == 20 and cfg.difficulty_weighting is False
    with pytest.raises(ValueError, match="'steps'"):
        cfg.with_overrides(["steps=many"])
    a, b = cfg.resolved(), cfg.resolved()
    assert a.run_name == b.run_name and a.run_name.startswith("pretrain-w32-")
    assert a.warmup == 2 and a.bins == str(tmp_path.resolve() / "bins.json")
    assert cfg.replace(seed=1).resolved().run_name != a.run_name
    # where a run is stored or called does not change what it computes
    assert cfg.replace(storage_path="/elsewhere").config_hash() == cfg.config_hash()
    with pytest.raises(ValueError, match="divisible"):
        cfg.replace(batch_size=5, workers=2).resolved()


def test_architecture_overrides_reach_the_model(tmp_path):
    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.presets import get_preset
    from fm4npp.pretrain.model_spec import model_config_for

    cfg = PretrainConfig(preset="w16", data=str(tmp_path)).with_overrides(["n_freq=6", "n_layers=2"])
    mcfg = model_config_for(cfg, k=5)
    assert (mcfg.n_freq, mcfg.n_layers, mcfg.k) == (6, 2, 5)
    assert FM4NPP(mcfg).embed.position.in_features == 3 * (1 + 2 * 6)
    assert model_config_for(PretrainConfig(preset="w16"), k=5).n_freq == get_preset("w16").n_freq
    with pytest.raises(ValueError, match="n_freq"):
        cfg.replace(n_freq=-1).resolved()


def test_loss_is_paper_formula_with_masks():
    g = torch.Generator().manual_seed(0)
    B, L, k = 3, 5, 2
    preds, targets = torch.rand(B, L, k, 3, generator=g), torch.rand(B, L, k, 3, generator=g)
    mask = torch.rand(B, L, k, generator=g) > 0.3
    mask[2, 3:] = False  # padding / missing neighbours
    w = torch.tensor([0.5, 1.0, 2.0])
    ref = []
    for i in range(B):
        d2 = ((preds[i] - targets[i]) ** 2).sum(-1)[mask[i]]
        ref.append(d2.mean())
    ref = torch.stack(ref)
    assert torch.allclose(per_event_mse(preds, targets, mask)[0], ref)
    assert torch.allclose(pretrain_loss(preds, targets, mask, w), (w * ref).mean())
    assert torch.allclose(pretrain_loss(preds, targets, mask), ref.mean())
    # garbage under the mask changes nothing
    p2 = preds.clone()
    p2[~mask] = 1e6
    assert torch.allclose(pretrain_loss(p2, targets, mask, w), (w * ref).mean())
    coords = torch.rand(B, L, 3, generator=g)
    assert torch.equal(trivial_predictions(coords, k)[:, :, 1], coords)


def test_lr_schedule_warmup_then_cosine():
    lam = [warmup_cosine(s, 10, 100, 0.1) for s in range(100)]
    assert lam[0] == pytest.approx(0.1) and lam[9] == pytest.approx(1.0)
    assert lam[10] == pytest.approx(1.0)
    assert lam[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lam[10:], lam[11:]))
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_data_order_deterministic_epochs():
    n, B = 10, 4
    seq = np.concatenate([global_batch_indices(s, B, n, seed=3) for s in range(5)])  # 2 epochs
    assert sorted(seq[:10]) == list(range(10)) and sorted(seq[10:20]) == list(range(10))
    assert np.array_equal(global_batch_indices(2, B, n, 3), global_batch_indices(2, B, n, 3))
    assert not np.array_equal(seq[:10], seq[10:20])


def test_cli_refuses_bad_preset_and_key(tmp_path, capsys):
    from fm4npp.cli import main

    assert main(["pretrain", "--preset", "m99", "--data", str(tmp_path)]) == 2
    assert "valid presets" in capsys.readouterr().err
    assert main(["pretrain", "--preset", "w16", "--data", str(tmp_path), "--set", "bogus=1"]) == 2
    assert "valid keys" in capsys.readouterr().err
