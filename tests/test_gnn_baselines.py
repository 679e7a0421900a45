"""The GNN baselines (fm4npp.downstream.gnn): graphs against brute force, each hit GNN on a
separable labelling, the Exa.TrkX-style finder on straight tracks, and the model/task rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")
torch.set_num_threads(1)  # 2 shared cores: a second thread only adds contention


def _brute_force(x: np.ndarray, k: int, radius: float) -> set:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    out = set()
    for i in range(len(x)):
        near = [j for j in np.argsort(d[i])[:k] if d[i, j] < radius]
        out |= {(int(j), i) for j in near}
    return out


@pytest.mark.parametrize("k,radius", [(5, 0.6), (50, 1.0), (3, 10.0)])
def test_neighbour_edges_match_brute_force(k, radius):
    from fm4npp.downstream.gnn.graph import hit_location, neighbour_edges

    rng = np.random.default_rng(k)
    coords = rng.random((120, 3)).astype(np.float32)
    x = hit_location(coords)
    edges = neighbour_edges(x, k, radius)
    assert edges.dtype == np.int64 and edges.shape[0] == 2
    got = set(map(tuple, edges.T.tolist()))
    assert len(got) == edges.shape[1]  # no duplicate edge
    assert got == _brute_force(x.astype(np.float64), k, radius)
    # in-degree capped by k, and the radius binds for some hits at the tighter setting
    indeg = np.bincount(edges[1], minlength=len(x))
    assert indeg.max() <= k
    if radius < 1:
        assert indeg.min() < k


def test_neighbour_edges_edge_cases():
    from fm4npp.downstream.gnn.graph import neighbour_edges

    assert neighbour_edges(np.zeros((1, 4)), 5, 1.0).shape == (2, 0)
    dup = np.zeros((4, 4))  # identical hits: every other hit is a neighbour, never the hit itself
    e = neighbour_edges(dup, 2, 1.0)
    assert e.shape[1] == 8 and (e[0] != e[1]).all()
    with pytest.raises(ValueError, match="k >= 1"):
        neighbour_edges(dup, 0, 1.0)


def test_hit_location_and_phi_range():
    from fm4npp.downstream.gnn.graph import check_full_turn, hit_features, hit_location

    loc = hit_location(np.array([[0.3, 0.25, 0.75]]))  # (r, phi, eta) normalised
    assert np.allclose(loc, [[0.5, 0.0, 1.0, 0.3]], atol=1e-6)  # eta_hat, cos, sin, r_hat
    feats = hit_features({"coords": np.array([[0.3, 0.25, 0.75]]), "energy": np.array([2.0])})
    assert feats.shape == (1, 5) and feats[0, 0] == 2.0
    check_full_turn((-np.pi, np.pi))
    with pytest.raises(ValueError, match="full turn"):
        check_full_turn((-1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        hit_location(np.zeros((4, 2)))


def _half_space_events(n: int, seed: int) -> list[dict]:
    """Hits uniform in (r, phi, eta); the label is the eta half they sit in (with a gap), the
    energy carries no information: a labelling only the hit locations separate."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        m = 120
        coords = rng.random((m, 3)).astype(np.float32)
        label = coords[:, 2] > 0.5
        coords[:, 2] = np.where(label, 0.6 + 0.4 * coords[:, 2], 0.4 * coords[:, 2])
        events.append({"coords": coords, "energy": rng.normal(0, 1, m).astype(np.float32),
                       "noise": label, "track_id": np.arange(m), "pid_class": np.zeros(m, np.int8),
                       "event_id": np.int64(seed * 1000 + i)})
    return events


@pytest.mark.parametrize("kind", ["sage", "gat", "gcn", "graphconv"])
def test_each_hit_gnn_learns_a_separable_labelling(kind):
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.downstream.gnn.run import predict_gnn, train_gnn

    cfg = FinetuneConfig(task="noise", source=kind, epochs=15, lr=3e-3, batch_size=4, experiment="")
    cfg = cfg.with_overrides(["gnn.k=6", "gnn.d_hidden=32", "gnn.n_layers=2", "gnn.classifier_widths=32,16"])
    model, fit = train_gnn(cfg, _half_space_events(24, 1), [], n_classes=2, log=lambda m: None)
    assert fit["steps"] == 90
    test = _half_space_events(6, 2)
    pred = np.concatenate(predict_gnn(model, cfg, test))
    truth = np.concatenate([e["noise"] for e in test])
    assert (pred == truth).mean() > 0.95, kind


def _straight_track_events(n: int, seed: int, n_tracks: int = 5, n_layers: int = 16) -> list[dict]:
    """Straight tracks from the origin: fixed (phi, eta) per track, one hit per layer, a few
    noise hits; tracks at least 0.1 apart in (phi, eta) (normalised)."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        centres = []
        while len(centres) < n_tracks:
            c = rng.uniform(0.1, 0.9, 2)
            if all(np.linalg.norm(c - o) > 0.1 for o in centres):
                centres.append(c)
        r = (np.arange(n_layers) + 0.5) / n_layers
        coords = np.concatenate([np.stack([r, np.full_like(r, p), np.full_like(r, e)], 1)
                                 for p, e in centres] + [rng.random((3, 3))]).astype(np.float32)
        tid = np.concatenate([np.full(n_layers, t) for t in range(n_tracks)] + [n_tracks + np.arange(3)])
        noise = tid >= n_tracks
        events.append({"coords": coords, "energy": rng.normal(0, 1, len(tid)).astype(np.float32),
                       "track_id": tid, "noise": noise, "pid_class": np.zeros(len(tid), np.int8),
                       "event_id": np.int64(seed * 1000 + i)})
    return events


def test_exatrkx_recovers_straight_tracks():
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.downstream.gnn.run import predict_gnn, train_gnn
    from fm4npp.metrics.tracking import tracking_metrics

    cfg = FinetuneConfig(task="tracking", source="exatrkx", epochs=30, lr=3e-3, batch_size=4,
                         experiment="").with_overrides(["exatrkx.max_neighbours=12", "exatrkx.n_iterations=2",
                                                        "exatrkx.gnn_hidden=32", "exatrkx.embed_hidden=32"])
    model, fit = train_gnn(cfg, _straight_track_events(24, 1), _straight_track_events(4, 3),
                           log=lambda m: None)
    assert fit["radius_graph"]["edge_efficiency"] > 0.5
    test = _straight_track_events(8, 2)
    pred = predict_gnn(model, cfg, test)
    m = tracking_metrics([e["track_id"] for e in test], pred, [e["noise"] for e in test])
    assert m["ari_event_mean"] > 0.95 and m["efficiency"] > 0.9, m


def test_components_drop_small_ones():
    from fm4npp.downstream.gnn.exatrkx import components

    edges = np.array([[0, 1, 3, 5], [1, 2, 4, 5]])  # {0,1,2}, {3,4}, {5} (self loop), {6}
    labels = components(7, edges, min_hits=3)
    assert labels[0] == labels[1] == labels[2] >= 0
    assert (labels[3:] == -1).all()
    assert (components(7, edges, min_hits=1) >= 0).all() and len(set(components(7, edges, 1))) == 4


def test_model_task_rules_and_sizes():
    from fm4npp.downstream.config import GNN_SIZES, MODELS, FinetuneConfig

    with pytest.raises(ValueError, match="'sage'.*does not do task 'tracking'"):
        FinetuneConfig(task="tracking", source="sage")
    with pytest.raises(ValueError, match="'exatrkx'.*does not do task 'pid'"):
        FinetuneConfig(task="pid", source="exatrkx")
    with pytest.raises(ValueError, match="gnn.classifier_widths"):
        FinetuneConfig(task="pid", source="gcn").with_overrides(["gnn.classifier_widths=128,x"])
    paper = FinetuneConfig(task="pid", source="sage").with_overrides(GNN_SIZES["paper"])
    assert (paper.gnn.k, paper.gnn.d_hidden, paper.gnn.n_layers, paper.gnn.classifier_widths) == (50, 256, 6, "128,64")
    assert MODELS["adapter_only"].source == "raw"
    # the GNN sections stay out of the adapters' config hash (their run names do not move)
    raw = FinetuneConfig(source="raw")
    assert raw.config_hash() == FinetuneConfig(source="raw").with_overrides(["gnn.k=3"]).config_hash()
    assert FinetuneConfig(task="pid", source="sage").config_hash() != \
        FinetuneConfig(task="pid", source="sage").with_overrides(["gnn.k=3"]).config_hash()


def test_cli_refuses_a_gnn_on_the_wrong_task(capsys):
    from fm4npp.cli import main

    assert main(["finetune", "--task", "tracking", "--model", "gat", "--data", "x"]) == 2
    assert "does not do task 'tracking'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --model and its older name --source together
        main(["finetune", "--task", "pid", "--model", "gat", "--source", "raw"])
