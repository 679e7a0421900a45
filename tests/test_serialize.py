"""Serialization: coordinates, fitted bins, orders, k-next-nearest-neighbour targets, events."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from fm4npp.serialize import events as ev_mod
from fm4npp.serialize.bins import BinsError, fit_bins, load_bins, save_bins
from fm4npp.serialize.config import SerializeConfig
from fm4npp.serialize.coords import ETA, PHI, R, detector_geometry, normalised_coords
from fm4npp.serialize.knn import dense_next_neighbor_indices, next_neighbor_indices, next_neighbors, pair_sq_dist
from fm4npp.serialize.order import hilbert_index, morton_index, quantise, serialize_order

ORDERS = ("raster", "radial", "zorder", "hilbert", "random")


def toy_events(n, seed=0, max_tracks=25, noise_hits=0):
    rng = np.random.default_rng(seed)
    return [ev_mod.toy_event(rng, i, max_tracks=max_tracks, noise_hits=noise_hits) for i in range(n)]


@pytest.fixture(scope="module")
def cfg():
    return SerializeConfig(k=10)


@pytest.fixture(scope="module")
def bins(cfg):
    return fit_bins(toy_events(60, seed=1, noise_hits=20), cfg, source="toy")


def event_coords(event, bins):
    return normalised_coords(event["hit_x"], event["hit_y"], event["hit_z"], bins.ranges,
                             bins.layer_radii_cm, bins.snap_r_tol_cm)


# ------------------------------------------------------------------------------------ kNN

@pytest.mark.parametrize("periodic", [False, True])
def test_knn_equals_brute_force_on_random_points_with_ties(periodic):
    rng = np.random.default_rng(7)
    for trial in range(12):
        n = int(rng.integers(2, 400))
        r = rng.random(n) if trial % 2 else rng.integers(0, 12, n) / 11.0  # continuous / shared radii
        c = np.stack([r, rng.random(n), rng.random(n)], 1).astype(np.float32)
        if trial % 3 == 0:  # exact distance ties on a coarse grid
            c[:, 1:] = np.round(c[:, 1:] * 6) / 6
        for k in (1, 7, 30):
            fast = next_neighbor_indices(c, k, periodic_phi=periodic)
            ref = dense_next_neighbor_indices(c, k, periodic_phi=periodic)
            assert fast.dtype == np.int64 and fast.shape == (n, k)
            np.testing.assert_array_equal(fast, ref)
            # The returned squared distances are the reference formula's, bit for bit.
            idx, sq = next_neighbors(c, k, periodic_phi=periodic)
            np.testing.assert_array_equal(idx, ref)
            c64 = c.astype(np.float64)
            if periodic:
                c64[:, 1] = np.mod(c64[:, 1], 1.0)
            want = np.where(idx >= 0, pair_sq_dist(c64[:, None, :], c64[np.maximum(idx, 0)], periodic), np.inf)
            np.testing.assert_array_equal(sq, want)


@pytest.mark.parametrize("periodic", [False, True])
def test_knn_equals_brute_force_on_layered_events(periodic, bins):
    for event in toy_events(4, seed=3, max_tracks=40, noise_hits=30):
        c = event_coords(event, bins)
        assert len(np.unique(c[:, R])) <= 48  # snapped onto the 48 pad rows
        for k in (10, 30):
            np.testing.assert_array_equal(next_neighbor_indices(c, k, periodic),
                                          dense_next_neighbor_indices(c, k, periodic))


def test_knn_targets_strictly_outward_sorted_and_padded():
    rng = np.random.default_rng(0)
    c = np.stack([rng.integers(0, 8, 300) / 7.0, rng.random(300), rng.random(300)], 1).astype(np.float32)
    k = 12
    idx = next_neighbor_indices(c, k)
    valid = idx >= 0
    rows = np.nonzero(valid)[0]
    assert (c[idx[valid], R] > c[rows, R]).all()
    d = np.where(valid, np.linalg.norm(c[np.where(valid, idx, 0)] - c[:, None, :], axis=-1), np.inf)
    with np.errstate(invalid="ignore"):  # inf - inf in padded slots, which are not checked
        assert (np.diff(d, axis=1)[valid[:, 1:]] >= 0).all()  # nearest first
    # Padding comes last, and exactly where fewer than k points lie outside.
    n_out = (c[None, :, R] > c[:, None, R]).sum(1)
    np.testing.assert_array_equal(valid.sum(1), np.minimum(n_out, k))
    assert not (~valid[:, :-1] & valid[:, 1:]).any()


def test_knn_degenerate_inputs():
    assert next_neighbor_indices(np.zeros((0, 3)), 5).shape == (0, 5)
    np.testing.assert_array_equal(next_neighbor_indices(np.zeros((1, 3)), 3), [[-1, -1, -1]])
    same_r = np.array([[0.5, 0.1, 0.1], [0.5, 0.2, 0.2]])
    np.testing.assert_array_equal(next_neighbor_indices(same_r, 2), -np.ones((2, 2), int))
    with pytest.raises(ValueError, match="row 1"):
        next_neighbor_indices(np.array([[0.1, 0.1, 0.1], [np.nan, 0, 0]]), 2)


def test_knn_periodic_phi_wraps():
    c = np.array([[0.1, 0.01, 0.5], [0.2, 0.98, 0.5], [0.3, 0.30, 0.5]])
    assert next_neighbor_indices(c, 1, periodic_phi=False)[0, 0] == 2
    assert next_neighbor_indices(c, 1, periodic_phi=True)[0, 0] == 1


# ------------------------------------------------------------------------------ coords, bins

def test_normalised_coords_known_point():
    ranges = {"r_cm": (30.0, 78.0), "phi": (-np.pi, np.pi), "eta": (-2.0, 2.0)}
    x, y, z = np.array([0.0]), np.array([54.0]), np.array([54.0 * np.sinh(1.0)])
    c = normalised_coords(x, y, z, ranges)
    np.testing.assert_allclose(c[0], [0.5, 0.75, 0.75], atol=1e-6)
    assert c.dtype == np.float32


def test_fitted_bins_give_near_equal_occupancy(bins, cfg):
    assert bins.n_bins == (6, 8, 8)
    pts = np.concatenate([event_coords(e, bins) for e in toy_events(80, seed=11, noise_hits=20)])
    box = bins.box_indices(pts)
    for axis, n in ((1, 8), (2, 8)):  # eta, phi: equal frequency on an independent sample
        frac = np.bincount(box[:, axis], minlength=n) / len(pts)
        assert np.all(np.abs(frac - 1 / n) < 0.3 / n), frac
    # r: each of the 3 modules split in two halves of 8 pad rows each.
    radii = np.array(detector_geometry(cfg.detector).layer_radii_cm)
    r_norm = (radii - bins.ranges["r_cm"][0]) / (bins.ranges["r_cm"][1] - bins.ranges["r_cm"][0])
    r_bin = bins.box_indices(np.stack([r_norm, np.zeros(48), np.zeros(48)], 1))[:, 0]
    np.testing.assert_array_equal(r_bin, np.repeat(np.arange(6), 8))


def test_bins_roundtrip_hash_and_hard_errors(bins, tmp_path):
    path = tmp_path / "bins.json"
    digest = save_bins(bins, path)
    assert load_bins(path, expected_hash=digest).hash == digest == bins.hash
    with pytest.raises(BinsError, match="expected"):
        load_bins(path, expected_hash="0" * 64)
    with pytest.raises(BinsError, match="does not exist"):
        load_bins(tmp_path / "missing.json")
    doc = json.loads(path.read_text())
    doc["content"]["energy"]["mean"] += 1.0  # edited by hand
    path.write_text(json.dumps(doc))
    with pytest.raises(BinsError, match="content hash"):
        load_bins(path)


def test_difficulty_weights_mean_one_and_downweight_sparse_events(bins):
    diff = bins.difficulty
    w = np.asarray(diff["weights"])
    counts = np.asarray(diff["events_per_bin"])
    assert np.isclose((w * counts).sum() / counts.sum(), 1.0)
    assert (np.diff(w) <= 1e-12).all()  # larger neighbour distance (harder) -> smaller weight
    assert bins.weight_for(diff["edges"][0] - 1) == w[0] and bins.weight_for(float("nan")) == 1.0


# ------------------------------------------------------------------------------------ orders

@pytest.mark.parametrize("method", ORDERS)
def test_every_order_is_a_permutation(method, bins):
    c = event_coords(toy_events(1, seed=5)[0], bins)
    perm = serialize_order(c, method, bins, rng=np.random.default_rng(0))
    assert perm.dtype == np.int64
    np.testing.assert_array_equal(np.sort(perm), np.arange(len(c)))


def test_raster_order_respects_box_order(bins):
    c = event_coords(toy_events(1, seed=6, max_tracks=40, noise_hits=50)[0], bins)
    s = c[serialize_order(c, "raster", bins)]
    box = bins.box_indices(s)  # r, eta, phi bins
    key = (box[:, 0] * 8 + box[:, 2]) * 8 + box[:, 1]  # boxes by centre (r, phi, eta)
    assert (np.diff(key) >= 0).all()
    same_box = np.diff(key) == 0
    assert (np.diff(s[:, R])[same_box] >= 0).all()  # within a box: by r
    assert len(np.unique(key)) > 20  # a real mix of boxes was exercised


def test_radial_and_space_filling_orders(bins):
    c = event_coords(toy_events(1, seed=8)[0], bins)
    assert (np.diff(c[serialize_order(c, "radial"), R]) >= 0).all()
    z = morton_index(quantise(c))
    assert (np.diff(z[serialize_order(c, "zorder")].astype(np.float64)) >= 0).all()
    # Hilbert: on a full 8^3 grid consecutive cells are face neighbours, and the index is a bijection.
    g = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.uint64)
    h = hilbert_index(g, bits=3)
    np.testing.assert_array_equal(np.sort(h), np.arange(512))
    steps = np.abs(np.diff(g[np.argsort(h)].astype(int), axis=0)).sum(1)
    assert (steps == 1).all()


# ------------------------------------------------------------------------------------ events

def test_serialize_event_contract(bins, cfg):
    event = toy_events(1, seed=9, noise_hits=10)[0]
    out = ev_mod.serialize_event(event, bins, cfg)
    n, k = len(event["hit_x"]), cfg.k
    assert out["coords"].shape == (n, 3) and out["coords"].dtype == np.float32
    assert out["energy"].shape == (n,) and out["energy"].dtype == np.float32
    assert out["targets"].shape == (n, k, 3) and out["targets"].dtype == np.float32
    assert out["target_mask"].shape == (n, k) and out["target_mask"].dtype == bool
    assert out["weight"].dtype == np.float32 and out["event_id"].dtype == np.int64
    assert out["track_id"].dtype == np.int32 and out["pid_class"].dtype == np.int8
    assert out["noise"].dtype == bool and out["order"].dtype == np.int64
    # order maps serialized positions back to original hits; truth follows the points.
    np.testing.assert_array_equal(out["coords"], event_coords(event, bins)[out["order"]])
    np.testing.assert_array_equal(out["track_id"], event["hit_track_id"][out["order"]])
    np.testing.assert_array_equal(out["noise"], event["hit_noise"][out["order"]])
    # Targets are the coordinates of strictly-outer points; missing ones are masked.
    m = out["target_mask"]
    assert (out["targets"][..., R][m] > np.broadcast_to(out["coords"][:, None, R], m.shape)[m]).all()
    assert (out["targets"][~m] == 0).all() and m.any() and (~m).any()
    # Energy standardised with the fitted constants: mean ~0, std ~1 on similar data.
    assert abs(out["energy"].mean()) < 0.5 and 0.5 < out["energy"].std() < 1.5


def test_serialize_event_skips_tiny_events_and_applies_the_cap(bins, cfg):
    stats = Counter()
    empty = {"event_id": 1, "hit_x": [], "hit_y": [], "hit_z": [], "hit_energy": []}
    one = {"event_id": 2, "hit_x": [40.0], "hit_y": [1.0], "hit_z": [3.0], "hit_energy": [200.0]}
    assert ev_mod.serialize_event(empty, bins, cfg, stats) is None
    assert ev_mod.serialize_event(one, bins, cfg, stats) is None
    assert stats[ev_mod.SKIPPED_FEW] == 2 and stats[ev_mod.KEPT] == 0

    big = toy_events(1, seed=10, max_tracks=20)[0]
    n = len(big["hit_x"])
    drop = SerializeConfig(k=cfg.k, max_points=n - 1, cap_policy="drop")
    assert ev_mod.serialize_event(big, bins, drop, stats) is None
    crop = SerializeConfig(k=cfg.k, max_points=n - 5, cap_policy="crop")
    cropped = ev_mod.serialize_event(big, bins, crop, stats)
    full = ev_mod.serialize_event(big, bins, cfg, stats)
    assert len(cropped["coords"]) == n - 5 and cropped["targets"].shape[0] == n - 5
    for key in ("coords", "targets", "target_mask", "order"):
        np.testing.assert_array_equal(cropped[key], full[key][: n - 5])
    assert stats[ev_mod.DROPPED_CAP] == 1 and stats[ev_mod.CROPPED] == 1 and stats[ev_mod.KEPT] == 2

    bad = dict(one, event_id=3, hit_x=[40.0, float("nan")], hit_y=[1.0, 1.0], hit_z=[0.0, 0.0],
               hit_energy=[1.0, 1.0])
    with pytest.raises(ValueError, match="event 3: hit 1"):
        ev_mod.serialize_event(bad, bins, cfg)


@pytest.mark.parametrize("policy", ["drop", "crop"])
def test_serialize_event_follows_the_one_keep_drop_rule(bins, cfg, policy):
    # serialize_event, bin fitting, the pipeline's counts and the studies' D all use
    # config.kept_points: what it says an event brings is what serialization makes of it
    from fm4npp.serialize.config import kept_points

    events = toy_events(12, seed=4, max_tracks=20)
    events.append({"event_id": 99, "hit_x": [40.0], "hit_y": [1.0], "hit_z": [3.0], "hit_energy": [2.0]})
    sizes = [len(e["hit_x"]) for e in events]
    for cap in (0, int(np.median(sizes))):
        c = SerializeConfig(k=cfg.k, max_points=cap, cap_policy=policy)
        made = [ev_mod.serialize_event(e, bins, c) for e in events]
        assert [0 if m is None else len(m["coords"]) for m in made] == kept_points(sizes, c).tolist()


def test_the_keep_drop_rule_is_spelled_once():
    # a second copy of the rule branches on the policy outside fm4npp/serialize/config.py,
    # and can drift from it silently
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"cap_policy\s*(==|!=|\bin\b\s*\(|\bis\b)")
    found = []
    for d in ("fm4npp", "studies", "analysis", "benchmarks", "scripts"):
        for path in sorted((root / d).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == "fm4npp/serialize/config.py":
                continue
            found += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
                      if pattern.search(line)]
    assert not found, "use fm4npp.serialize.config.kept_points / over_cap:\n" + "\n".join(found)


def test_config_must_match_the_bins(bins):
    with pytest.raises(ValueError, match="k=10"):
        ev_mod.check_compatible(bins, SerializeConfig(k=30))


def test_cli_fit_and_info(tmp_path, capsys):
    from fm4npp.cli import main

    data = tmp_path / "data"
    ev_mod.write_toy_shards(data, 30, seed=2, events_per_shard=15, max_tracks=10)
    out = tmp_path / "bins.json"
    assert main(["serialize", "fit", str(data), "--out", str(out), "--events", "20", "--k", "5"]) == 0
    digest = load_bins(out).hash
    assert main(["serialize", "info", str(out), "--expect", digest]) == 0
    assert main(["serialize", "info", str(out), "--expect", "f" * 64]) == 2
    assert main(["serialize", "info", str(tmp_path / "nope.json")]) == 2
    # Refitting the same data gives the same bytes (and hash).
    out2 = tmp_path / "bins2.json"
    assert main(["serialize", "fit", str(data), "--out", str(out2), "--events", "20", "--k", "5"]) == 0
    assert out.read_bytes() == out2.read_bytes()
