"""Downstream adapters: matcher, tracking adapter, classifier, feature cache (fast, CPU)."""

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # 2 shared cores: a second thread only adds contention

from fm4npp.downstream.classify import PointClassifier, class_weights, classification_loss, predict_classes
from fm4npp.downstream.config import ClassifierConfig, FinetuneConfig, TrackingAdapterConfig
from fm4npp.downstream.tracking import (TrackingAdapter, assign_tracks, build_targets, hungarian, match_cost,
                                        tracking_loss)
from fm4npp.metrics.classification import classification_metrics
from fm4npp.metrics.tracking import tracking_metrics


def _toy_batch(seed=0, B=2, L=120, T=6, d=16, n_noise=8):
    g = torch.Generator().manual_seed(seed)
    tid = torch.randint(0, T, (B, L), generator=g)
    noise = torch.zeros(B, L, dtype=torch.long)
    noise[:, :n_noise] = 1
    tid[:, :n_noise] = T  # noise hits carry their own (low-momentum) particle id
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 100:] = False
    tid[~mask], noise[~mask] = -1, -1
    centres = torch.randn(B, T + 1, d, generator=g)
    x = centres[torch.arange(B)[:, None], tid.clamp(min=0)] + 0.3 * torch.randn(B, L, d, generator=g)
    x[~mask] = 1e3  # garbage in padding must not matter
    return x, tid, noise, mask


def test_hungarian_trivial():
    cost = torch.tensor([[5.0, 0.0, 9.0], [0.0, 5.0, 9.0], [9.0, 9.0, 0.0], [1.0, 1.0, 1.0]])
    rows, cols = hungarian(cost)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0, 2: 2}


def test_match_cost_prefers_the_right_query():
    cfg = TrackingAdapterConfig()
    tgt = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.float32)  # (M=2, n=4)
    logits = torch.full((4, 3), -8.0)  # (n, K=3): query 2 predicts track 0, query 0 track 1
    logits[:2, 2] = 8.0
    logits[2:, 0] = 8.0
    rows, cols = hungarian(match_cost(logits, torch.zeros(3), tgt, cfg))
    assert dict(zip(rows.tolist(), cols.tolist())) == {2: 0, 0: 1}


def test_targets_exclude_padding_and_noise():
    x, tid, noise, mask = _toy_batch()
    for mode in ("ignore", "negative"):
        tg = build_targets(tid, noise, mask, TrackingAdapterConfig(noise_in_masks=mode))
        for b, t in enumerate(tg):
            assert not (t["masks"] & ~mask[b]).any()  # no padding in any target track
            assert not (t["masks"] & (noise[b] > 0)).any()  # no noise in any target track
            assert 6 not in t["ids"].tolist()  # the noise particle is never a target
            assert not t["points"][~mask[b]].any()
            assert t["points"][noise[b] > 0].all() == (mode == "negative")


def test_more_tracks_than_queries_keeps_largest():
    tid = torch.tensor([[0, 0, 0, 1, 1, 2]])
    tg = build_targets(tid, torch.zeros_like(tid), torch.ones_like(tid, dtype=torch.bool),
                       TrackingAdapterConfig(n_queries=2))[0]
    assert sorted(tg["ids"].tolist()) == [0, 1] and not tg["points"][5]


def test_tracking_adapter_overfits_tiny_event():
    torch.manual_seed(0)
    x, tid, noise, mask = _toy_batch()
    cfg = TrackingAdapterConfig(d_embed=32, n_queries=10, n_layers=2, d_ffn=64)
    model = TrackingAdapter(x.shape[-1], cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        out = tracking_loss(model(x, mask), tid, noise, mask, cfg)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.1 * losses[0]
    pred = assign_tracks(model(x, mask)[-1], mask)
    assert (pred[~mask] == -1).all() and (pred[mask] >= 0).all()
    m = tracking_metrics([tid[b].numpy() for b in range(2)], [pred[b].numpy() for b in range(2)],
                         [noise[b].numpy() for b in range(2)])
    assert m["ari_event_mean"] > 0.95 and m["efficiency"] > 0.9


def test_padding_cannot_change_predictions():
    torch.manual_seed(0)
    x, tid, noise, mask = _toy_batch()
    model = TrackingAdapter(x.shape[-1], TrackingAdapterConfig(d_embed=16, n_queries=4, n_layers=1, d_ffn=16)).eval()
    a = model(x, mask)[-1]["mask_logits"][1, :100]
    x2 = x.clone()
    x2[1, 100:] = -7.0
    b = model(x2, mask)[-1]["mask_logits"][1, :100]
    assert torch.allclose(a, b, atol=1e-5)
    # an event cut to its real points gives the same answer as the padded one
    c = model(x[1:2, :100], mask[1:2, :100])[-1]["mask_logits"][0]
    assert torch.allclose(a, c, atol=1e-4)


def test_class_weights_from_frequencies():
    w = class_weights([np.array([0] * 90 + [1] * 10 + [-1] * 5)], 3, power=1.0)
    assert w[0] == pytest.approx(100 / (3 * 90)) and w[1] == pytest.approx(100 / (3 * 10)) and w[2] == 0
    assert class_weights(np.array([0, 1]), 2, power=0.0).tolist() == [1.0, 1.0]


def test_classifier_handles_imbalance():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    B, L = 4, 200
    y = (torch.rand(B, L, generator=g) < 0.04).long()  # 4 % minority class
    x = torch.randn(B, L, 8, generator=g)
    x[..., 0] += 1.2 * y  # minority separable only partly: the unweighted optimum ignores it
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 150:] = False
    y[~mask] = -1

    def fit(weights):
        torch.manual_seed(0)
        m = PointClassifier(8, 2, ClassifierConfig(d_embed=16, d_hidden=16, n_heads=2))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        for _ in range(60):
            loss = classification_loss(m(x, mask), y, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
        pred = predict_classes(m(x, mask), mask)
        assert (pred[~mask] == -1).all()
        return classification_metrics(y.numpy(), pred.numpy(), ["sig", "minor"])

    plain = fit(None)
    balanced = fit(class_weights(y.numpy(), 2, power=1.0))
    assert balanced["per_class"]["minor"]["recall"] > plain["per_class"]["minor"]["recall"] + 0.2
    assert balanced["macro_recall"] > plain["macro_recall"]


def test_config_overrides_and_errors():
    cfg = FinetuneConfig(source="raw").with_overrides(["lr=3e-4", "tracking.n_queries=7", "epochs=2"])
    assert cfg.lr == 3e-4 and cfg.tracking.n_queries == 7 and cfg.epochs == 2
    with pytest.raises(KeyError):
        cfg.with_overrides(["tracking.nope=1"])
    with pytest.raises(ValueError, match="backbone"):
        FinetuneConfig(source="fm")
    with pytest.raises(ValueError, match="task"):
        FinetuneConfig(task="jets", source="raw")


def test_label_saving_factor():
    from fm4npp.downstream.studies import label_saving_factor

    # baseline best 0.6 at n=1000; FM reaches 0.5 at 100 and 0.7 at 400 -> crosses 0.6 at 200
    r = label_saving_factor([100, 400, 1000], [0.5, 0.7, 0.8], [100, 400, 1000], [0.3, 0.5, 0.6])
    assert r["n_fm"] == pytest.approx(200.0) and r["factor"] == pytest.approx(5.0) and r["bound"] == ""
    r = label_saving_factor([100, 1000], [0.9, 0.95], [100, 1000], [0.3, 0.6])
    assert r["factor"] == pytest.approx(10.0) and r["bound"] == "lower"
    assert label_saving_factor([100, 1000], [0.1, 0.2], [100, 1000], [0.3, 0.6])["factor"] is None


def test_study_table_averages_seeds_and_says_which(monkeypatch):
    from fm4npp.downstream import studies

    def cell(task, source, seed, score, n=100):
        return {"task": task, "source": source, "backbone": "w8" if source == "fm" else "", "n_train": n,
                "seed": seed, "run_id": "r", "metrics": {k: score for k in (
                    "ari_event_mean", "ari_pooled", "efficiency", "purity", "spacepoint_efficiency",
                    "spacepoint_purity", "accuracy", "macro_recall", "macro_precision")}}

    cells = [cell("tracking", "fm", 0, 0.8), cell("tracking", "fm", 1, 0.6), cell("tracking", "fm", 2, 0.1, n=10),
             cell("tracking", "raw", 0, 0.5), cell("tracking", "raw", 1, 0.5)]
    monkeypatch.setattr(studies, "load_study_cells", lambda study, experiment=None: cells)
    table = studies.study_table("x")
    assert "0.7000" in table and "0.5000" in table and "0.1000" not in table  # largest n only
    assert table.rstrip().endswith("seeds [0, 1]: mean per row")
    cells.append(cell("pid", "fm", 0, 0.9))  # a row with one seed: the footer names every row's seeds
    table = studies.study_table("x")
    assert "seeds (mean per row): pid fm w8 [0]; tracking fm w8 [0, 1]; tracking raw [0, 1]" in table


def test_classifier_dropout_trains_stochastic_and_predicts_exactly():
    torch.manual_seed(0)
    x, mask = torch.randn(2, 50, 8), torch.ones(2, 50, dtype=torch.bool)
    mask[1, 30:] = False
    m = PointClassifier(8, 5, ClassifierConfig(d_embed=16, d_hidden=16, n_heads=2, dropout=0.3))
    m.train()
    assert not torch.allclose(m(x, mask), m(x, mask))
    m.eval()
    a = m(x, mask)
    assert torch.equal(a, m(x, mask))
    x2 = x.clone()
    x2[1, 30:] = 5.0  # padding cannot leak into real points through attention
    assert torch.allclose(a[1, :30], m(x2, mask)[1, :30], atol=1e-6)


def test_fm_rows_of_one_size_are_told_apart_by_objective():
    """Table 2 rows key FMs by this label: two objectives at one size must not share a row."""
    from fm4npp.downstream.train import _backbone_label
    from fm4npp.model.presets import get_preset

    w32, bi = get_preset("w32"), get_preset("w32", bidirectional=True)
    assert _backbone_label(w32, {}) == _backbone_label(w32, {"objective": {"name": "knn"}}) == "w32-L4"
    labels = {_backbone_label(w32, {"objective": {"name": "masked", "mask_fraction": 0.3}}),
              _backbone_label(w32, {"objective": {"name": "masked", "mask_fraction": 0.6}}),
              _backbone_label(bi, {"objective": {"name": "masked", "mask_fraction": 0.3}})}
    assert labels == {"w32-L4 masked", "w32-L4 masked-m60", "w32-L4 masked-bi"}
