"""Serialization over subsystems (issue 20 item 6): the raster scan, the bins and the kNN targets
on events mixing silicon and TPC hits, axial drift-wire hits without z, the subsystem through
the pipeline to the batch, and the model's subsystem embedding."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from fm4npp.data.schema import SUBSYSTEM_IDS
from fm4npp.serialize.bins import fit_bins, r_cuts_cm
from fm4npp.serialize.config import SerializeConfig
from fm4npp.serialize.coords import detector_geometry
from fm4npp.serialize.events import serialize_event, write_event_shard, write_toy_shards
from fm4npp.serialize.knn import dense_next_neighbor_indices, next_neighbor_indices
from fm4npp.sim.config import TransportConfig
from fm4npp.sim.run import simulate_particles

K = 10
CLEAN = TransportConfig(delta_rays=False, decays_in_flight=False, conversions=False)
MVTX, INTT, TPC, CTD = (SUBSYSTEM_IDS[s] for s in ("mvtx", "intt", "tpc", "ctd"))


def sim_event(detector: str, event_id: int, n_tracks: int = 12, seed: int = 0) -> dict:
    """A few charged pions through `detector` (no PYTHIA): one event in the Parquet layout."""
    rng = np.random.default_rng([seed, event_id])
    pt, phi, eta = rng.uniform(0.5, 3, n_tracks), rng.uniform(-np.pi, np.pi, n_tracks), rng.uniform(-0.8, 0.8, n_tracks)
    p3 = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], 1)
    hits, _ = simulate_particles(np.full(n_tracks, 211), p3, (0, 0, rng.normal(0, 2)), detector=detector,
                                 transport=CLEAN, rng=rng)
    return {"event_id": event_id, "hit_x": hits["x"], "hit_y": hits["y"], "hit_z": hits["z"],
            "hit_energy": hits["energy"], "hit_track_id": hits["tid"].astype(np.int32),
            "hit_pdg": hits["pdg"].astype(np.int32), "hit_pid_class": np.ones(len(hits["x"]), np.int8),
            "hit_noise": np.zeros(len(hits["x"]), bool), "hit_subsystem": hits["subsystem"].astype(np.int8),
            "hit_sigma_rphi": hits["sigma_rphi"], "hit_sigma_z": hits["sigma_z"]}


@pytest.fixture(scope="module")
def sphenix():
    cfg = SerializeConfig(k=K, detector="sphenix", n_difficulty_bins=3)
    events = [sim_event("sphenix", e) for e in range(8)]
    return cfg, fit_bins(events, cfg), events


def test_r_bins_never_split_a_layer_and_keep_the_tpc_default():
    tpc = detector_geometry("sphenix_tpc")
    cuts = r_cuts_cm(tpc.layer_radii_cm, tpc.module_edges_cm, 6)  # 2 per module, as before
    radii = np.asarray(tpc.layer_radii_cm)
    np.testing.assert_array_equal(np.bincount(np.searchsorted(cuts, radii)), np.full(6, 8))
    for name, n_r in (("sphenix", 6), ("aleph", 6), ("zeus", 6), ("zeus", 12)):
        geo = detector_geometry(name)
        radii = np.asarray(geo.layer_radii_cm)
        cuts = np.asarray(r_cuts_cm(radii, geo.module_edges_cm, n_r))
        assert len(cuts) == n_r - 1 and np.all(np.diff(cuts) > 0)
        assert np.min(np.abs(radii[:, None] - cuts[None, :])) > 0.1, name  # between layers
        module = np.searchsorted([lo for lo, _ in geo.module_edges_cm], radii, side="right")
        r_bin = np.searchsorted(cuts, radii)
        if n_r >= len(geo.module_edges_cm):  # no bin holds two modules
            assert all(len(set(module[r_bin == b])) == 1 for b in range(n_r)), name


def test_scan_goes_mvtx_then_intt_then_tpc(sphenix):
    cfg, bins, events = sphenix
    for ev in events:
        s = serialize_event(ev, bins, cfg)
        sub = s["subsystem"].astype(int)
        assert set(sub) == {MVTX, INTT, TPC}
        rank = np.select([sub == MVTX, sub == INTT], [0, 1], 2)  # ids are not in radial order
        assert np.all(np.diff(rank) >= 0), sub  # one block per subsystem, inside out
        r = s["coords"][:, 0]
        assert r[sub == MVTX].max() < r[sub == INTT].min() <= r[sub == INTT].max() < r[sub == TPC].min()
        np.testing.assert_array_equal(s["subsystem"], ev["hit_subsystem"][s["order"]])


def test_knn_crosses_from_silicon_to_the_first_tpc_layer(sphenix):
    cfg, bins, events = sphenix
    first_tpc_r = detector_geometry("sphenix").layer_radii_cm[7]
    crossed = 0
    for ev in events:
        s = serialize_event(ev, bins, cfg)
        np.testing.assert_array_equal(dense_next_neighbor_indices(s["coords"], K), next_neighbor_indices(s["coords"], K))
        idx, sub, tid = next_neighbor_indices(s["coords"], K), s["subsystem"], s["track_id"]
        r_cm = np.hypot(ev["hit_x"], ev["hit_y"])[s["order"]]
        outer_intt = np.flatnonzero((sub == INTT) & (r_cm > 10.0))
        for i in outer_intt:
            nb = idx[i][idx[i] >= 0]
            assert np.all(sub[nb] == TPC)  # nothing silicon lies farther out
            same = nb[tid[nb] == tid[i]]
            crossed += bool(np.any(np.abs(r_cm[same] - first_tpc_r) < 0.05))
    assert crossed >= 5  # the track's own hit on the first TPC pad row is a target


def test_unmeasured_z_is_never_a_target_and_matches_the_reference():
    events = [sim_event("zeus", e, n_tracks=8) for e in range(4)]
    cfg = SerializeConfig(k=K, detector="zeus", n_difficulty_bins=2)
    bins = fit_bins(events, cfg)
    for ev in events:
        s = serialize_event(ev, bins, cfg)
        zm = ~np.isposinf(ev["hit_sigma_z"])[s["order"]]
        assert 0 < zm.sum() < len(zm)  # axial and stereo superlayers
        idx = next_neighbor_indices(s["coords"], K, z_measured=zm)
        np.testing.assert_array_equal(idx, dense_next_neighbor_indices(s["coords"], K, z_measured=zm))
        tm = s["target_mask"]
        assert np.all(zm[idx[tm]]) and tm[~zm].any()  # axial hits have targets, are none
        np.testing.assert_array_equal(tm, idx >= 0)
    # an axial hit's targets ignore its (unmeasured) eta: moving it changes nothing
    c = np.array([[0.1, 0.5, 0.5], [0.2, 0.5, 0.9], [0.2, 0.52, 0.5], [0.3, 0.5, 0.5]])
    zm = np.array([False, True, True, False])
    assert next_neighbor_indices(c, 2, z_measured=zm)[0].tolist() == [1, 2]
    c[0, 2] = 0.9
    assert next_neighbor_indices(c, 2, z_measured=zm)[0].tolist() == [1, 2]
    with pytest.raises(ValueError, match="z_measured"):
        next_neighbor_indices(c, 2, z_measured=zm[:2])


def test_bad_subsystem_id_is_a_clear_error(sphenix):
    cfg, bins, events = sphenix
    ev = dict(events[0], hit_subsystem=np.full(len(events[0]["hit_x"]), 42, np.int8))
    with pytest.raises(ValueError, match="hit_subsystem 42"):
        serialize_event(ev, bins, cfg)


def test_pipeline_batch_carries_subsystems_in_scan_order(sphenix, tmp_path):
    import pyarrow.parquet as pq

    from fm4npp.data.pipeline import READ_COLUMNS, PipelineConfig, SerializeBatch, collate, load_serialized
    from fm4npp.data.validate import validate_dataset

    cfg, bins, events = sphenix
    write_event_shard(tmp_path / "s.parquet", events)
    pcfg = PipelineConfig(serialize=cfg, split_fractions=(1.0, 0.0, 0.0))
    plain = load_serialized(tmp_path, "train", cfg, bins, pcfg)
    rows = SerializeBatch(bins.content, pcfg.to_dict(), "train")(pq.read_table(tmp_path / "s.parquet", columns=READ_COLUMNS))
    ray_batch = {c: rows.column(c).to_numpy(zero_copy_only=False) for c in rows.column_names}
    for batch in (collate(plain), collate(ray_batch)):
        assert batch["subsystem"].dtype == torch.int64
        for i, ev in enumerate(plain):
            n = len(ev["coords"])
            assert batch["subsystem"][i, :n].tolist() == ev["subsystem"].tolist()
            assert torch.all(batch["subsystem"][i, n:] == -1)
    by_id = {int(e["event_id"]): e for e in events}
    for ev in plain:
        assert ev["subsystem"].tolist() == by_id[int(ev["event_id"])]["hit_subsystem"][ev["order"]].tolist()
    # toy shards (no v3 columns, no tracks given) validate and read as all TPC
    write_toy_shards(tmp_path / "toy", 4, max_tracks=5)
    problems = validate_dataset(tmp_path / "toy")
    assert [p.what for p in problems] == ["manifest missing"], problems  # bare shards, no manifest
    s = load_serialized(tmp_path / "toy", "train", cfg, bins, pcfg)[0]
    assert set(s["subsystem"].tolist()) == {TPC}


def test_version_2_files_read_as_all_tpc(sphenix, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fm4npp.data.io import read_events
    from fm4npp.data.schema import EVENT_SCHEMA, V3_COLUMNS

    _, _, events = sphenix
    write_event_shard(tmp_path / "v3.parquet", events[:2])
    t = pq.read_table(tmp_path / "v3.parquet").drop_columns(list(V3_COLUMNS))
    meta = {**EVENT_SCHEMA.metadata, b"fm4npp.schema_version": b"2"}
    (tmp_path / "v2").mkdir()
    pq.write_table(t.replace_schema_metadata(meta), tmp_path / "v2" / "a.parquet")
    got = list(read_events(tmp_path / "v2", ["event_id", "hit_x", "hit_subsystem", "hit_sigma_z"]))
    assert [len(e["hit_subsystem"]) for e in got] == [len(e["hit_x"]) for e in events[:2]]
    assert all(np.all(e["hit_subsystem"] == TPC) and np.all(np.isnan(e["hit_sigma_z"])) for e in got)
    assert pa.types.is_list(pq.read_schema(tmp_path / "v2" / "a.parquet").field("hit_x").type)


def _models(n_layers: int = 2, k: int = 3):
    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.config import N_SUBSYSTEM_IDS, ModelConfig

    base = ModelConfig(d_model=16, n_layers=n_layers, headdim=8, d_state=4, k=k, chunk_size=8)
    torch.manual_seed(0)
    old = FM4NPP(base)
    torch.manual_seed(0)
    new = FM4NPP(ModelConfig(**{**base.to_dict(), "n_subsystems": N_SUBSYSTEM_IDS}))
    return old, new


def test_subsystem_embedding_is_exactly_the_old_model_on_tpc_data():
    from fm4npp.model.flops import count_params

    old, new = _models()
    assert count_params(new.cfg) == new.num_params() == old.num_params() + new.cfg.n_subsystems * 16
    g = torch.Generator().manual_seed(1)
    coords, energy = torch.rand(2, 20, 3, generator=g), torch.randn(2, 20, generator=g)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    tpc = torch.full((2, 20), TPC)
    with torch.no_grad():
        ref = old(coords, energy, mask)
        assert torch.equal(new(coords, energy, mask, subsystem=tpc), ref)  # same init: same seed
        assert torch.equal(new(coords, energy, mask), ref)
        new.embed.subsystem.weight.normal_()  # trained: TPC's row stays zero (padding_idx)
        new.embed.subsystem.weight[TPC] = 0
        assert torch.equal(new(coords, energy, mask, subsystem=tpc), ref)
        mixed = tpc.clone()
        mixed[:, :5] = MVTX
        assert not torch.allclose(new(coords, energy, mask, subsystem=mixed), ref)
        padded = tpc.clone()
        padded[1, 15:] = -1  # collate's padding
        assert torch.equal(new(coords, energy, mask, subsystem=padded), ref)
        with pytest.raises(ValueError, match="subsystem ids"):
            new(coords, energy, mask, subsystem=torch.full((2, 20), 17))
    # weights saved before the embedding existed load into a model with it: same outputs
    new.load_state_dict(old.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(new(coords, energy, mask, subsystem=mixed), ref)
    with pytest.raises(ValueError, match="n_subsystems"):
        type(new.cfg)(n_subsystems=99)


def test_subsystem_gets_gradient_through_the_knn_objective(sphenix):
    """A short pretraining on sPHENIX events: the objective passes the batch's subsystems to
    the model, whose embedding learns (the TPC row stays zero) and whose loss falls."""
    from fm4npp.data.pipeline import collate
    from fm4npp.pretrain.objectives import build_objective
    from fm4npp.pretrain.config import PretrainConfig

    cfg, bins, events = sphenix
    batch = collate([serialize_event(ev, bins, cfg) for ev in events[:4]])
    _, model = _models(n_layers=1, k=K)
    obj = build_objective(PretrainConfig(objective="knn"))
    obj.check_batch(batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        loss, _ = obj.loss(obj.forward(model, batch, step), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    w = model.embed.subsystem.weight.detach()
    assert torch.all(w[TPC] == 0) and w[MVTX].abs().sum() > 0 and w[INTT].abs().sum() > 0
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    val = obj.val_errors(model, batch, nullcontext)["val_mse"][0]
    assert torch.isfinite(val).all()


@pytest.mark.slow
def test_pythia_sphenix_data_set_fits_serializes_and_pretrains(tmp_path, monkeypatch):
    """`fm4npp simulate --detector sphenix` -> serialize fit (detector from the manifest) ->
    the plain pipeline -> a few steps of the knn objective on the subsystem-embedding model."""
    from fm4npp.cli import main
    from fm4npp.data.pipeline import PipelineConfig, load_serialized, plain_batches
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.objectives import build_objective
    from fm4npp.serialize.bins import load_bins

    data = tmp_path / "sphenix"
    assert main(["simulate", "--detector", "sphenix", "--events", "12", "--seed", "5", "--out", str(data),
                 "--workers", "1"]) == 0
    assert main(["serialize", "fit", str(data), "--k", str(K)]) == 0
    bins = load_bins(data / "bins.json")
    assert bins.content["config"]["detector"] == "sphenix"
    cfg = SerializeConfig(k=K, detector="sphenix")
    stats = Counter()
    events = load_serialized(data, "train", cfg, bins, PipelineConfig(serialize=cfg), stats)
    assert events and all(e["subsystem"][0] == MVTX for e in events if MVTX in e["subsystem"])
    _, model = _models(n_layers=1, k=K)
    obj = build_objective(PretrainConfig(objective="knn"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step, batch in enumerate(plain_batches(events, PipelineConfig(serialize=cfg, batch_size=4))):
        loss, _ = obj.loss(obj.forward(model, batch, step), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert model.embed.subsystem.weight[MVTX].abs().sum() > 0
    # bins of another detector than the data set's are refused
    assert main(["serialize", "fit", str(data), "--detector", "zeus", "--out", str(tmp_path / "b.json")]) == 2


def test_pretraining_switch_and_frozen_features_use_the_subsystem():
    """`subsystem_embedding=true` builds the embedding into the run's model (run names of
    runs without it unchanged), and frozen-FM features read each event's subsystems."""
    import torch

    from fm4npp.downstream.features import backbone_states
    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.config import N_SUBSYSTEM_IDS
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.model_spec import model_config_for

    assert model_config_for(PretrainConfig(preset="w8"), k=3).n_subsystems == 0
    on = model_config_for(PretrainConfig(preset="w8", subsystem_embedding=True), k=3)
    assert on.n_subsystems == N_SUBSYSTEM_IDS
    assert (PretrainConfig(preset="w8", data="d").config_hash()
            == PretrainConfig(preset="w8", data="d", subsystem_embedding=False).config_hash())
    torch.manual_seed(0)
    model = FM4NPP(on)
    with torch.no_grad():
        model.embed.subsystem.weight.normal_()  # as after training
        model.embed.subsystem.weight[0].zero_()  # the TPC row stays zero (padding_idx)
    rng = np.random.default_rng(0)
    ev = {"coords": rng.random((20, 3)).astype(np.float32), "energy": rng.random(20).astype(np.float32)}
    tpc = backbone_states(model, [{**ev, "subsystem": np.zeros(20, np.int8)}])[0]
    plain = backbone_states(model, [ev])[0]
    silicon = backbone_states(model, [{**ev, "subsystem": np.r_[np.ones(5), np.zeros(15)].astype(np.int8)}])[0]
    assert torch.equal(tpc, plain)
    assert not torch.equal(silicon, plain)
