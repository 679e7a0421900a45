"""Data pipeline: splits, nested data fractions, collate, plain loader and the Ray Data path."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fm4npp.data import pipeline
from fm4npp.serialize import events as ev_mod
from fm4npp.serialize.bins import fit_bins_from_dir
from fm4npp.serialize.config import PipelineConfig, SerializeConfig


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("events")
    ev_mod.write_toy_shards(d, 60, seed=4, events_per_shard=20, max_tracks=8)
    # Degenerate events (0 and 1 points) that must be skipped and counted, never crash.
    empty = {"event_id": 1000, "hit_x": [], "hit_y": [], "hit_z": [], "hit_energy": [],
             "hit_track_id": [], "hit_pdg": [], "hit_pid_class": [], "hit_noise": []}
    ids = np.arange(1000, 1040)
    evs = [dict(empty, event_id=int(i)) for i in ids[:20]]
    evs += [dict(empty, event_id=int(i), hit_x=[40.0], hit_y=[2.0], hit_z=[5.0], hit_energy=[100.0],
                 hit_track_id=[1], hit_pdg=[211], hit_pid_class=[1], hit_noise=[False]) for i in ids[20:]]
    ev_mod.write_event_shard(d / "zz-degenerate.parquet", evs)
    return d


@pytest.fixture(scope="module")
def scfg():
    return SerializeConfig(k=5, fit_events=40)


@pytest.fixture(scope="module")
def bins(data_dir, scfg):
    return fit_bins_from_dir(data_dir, scfg)


def test_split_is_deterministic_disjoint_and_follows_fractions():
    cfg = PipelineConfig()
    ids = np.arange(200_000, dtype=np.int64)
    s = pipeline.split_of(ids, cfg)
    np.testing.assert_array_equal(s, pipeline.split_of(ids.copy(), PipelineConfig()))
    np.testing.assert_allclose(np.bincount(s, minlength=3) / ids.size, cfg.split_fractions, atol=0.005)
    masks = [pipeline.keep_mask(ids, split, cfg) for split in pipeline.SPLITS]
    np.testing.assert_array_equal(sum(m.astype(int) for m in masks), 1)  # a partition
    other = pipeline.split_of(ids, PipelineConfig(split_salt="other"))
    assert (other != s).mean() > 0.2  # the salt really reshuffles


def test_data_fractions_are_nested():
    ids = np.arange(100_000, dtype=np.int64)
    fractions = (0.01, 0.024, 0.05, 0.1, 0.3, 1.0)
    kept = [pipeline.keep_mask(ids, "train", PipelineConfig(data_fraction=f)) for f in fractions]
    for small, large, f in zip(kept, kept[1:], fractions):
        assert not (small & ~large).any()  # subset
        assert abs(small.sum() / kept[-1].sum() - f) < 0.01 + 0.1 * f
    # Validation and test do not shrink with the training fraction.
    np.testing.assert_array_equal(pipeline.keep_mask(ids, "val", PipelineConfig(data_fraction=0.01)),
                                  pipeline.keep_mask(ids, "val", PipelineConfig()))


def test_plain_loader_nested_fractions_and_counts(data_dir, scfg, bins):
    stats = Counter()
    pcfg = PipelineConfig(serialize=scfg, split_fractions=(1.0, 0.0, 0.0))
    all_train = pipeline.load_serialized(data_dir, "train", scfg, bins, pcfg, stats)
    assert stats[ev_mod.SKIPPED_FEW] == 40 and stats[ev_mod.KEPT] == 60 == len(all_train)
    assert pipeline.policy_counts(data_dir, "train", pcfg) == +stats
    half = pipeline.load_serialized(data_dir, "train", scfg, bins,
                                    PipelineConfig(serialize=scfg, split_fractions=(1.0, 0.0, 0.0), data_fraction=0.5))
    ids_half = {int(e["event_id"]) for e in half}
    assert 0 < len(ids_half) < 60 and ids_half <= {int(e["event_id"]) for e in all_train}


@pytest.mark.parametrize("policy", ["drop", "crop"])
def test_policy_counts_match_serialization_under_a_cap(data_dir, scfg, bins, policy):
    # the counts from point numbers alone and the serializer's own apply the same rule
    import dataclasses

    sizes = sorted(len(e["coords"]) for e in pipeline.load_serialized(
        data_dir, "train", scfg, bins, PipelineConfig(serialize=scfg, split_fractions=(1.0, 0.0, 0.0))))
    capped = dataclasses.replace(scfg, max_points=sizes[len(sizes) // 2], cap_policy=policy)
    pcfg = PipelineConfig(serialize=capped, split_fractions=(1.0, 0.0, 0.0))
    stats = Counter()
    pipeline.load_serialized(data_dir, "train", capped, bins, pcfg, stats)
    assert stats[ev_mod.DROPPED_CAP if policy == "drop" else ev_mod.CROPPED] > 0
    assert pipeline.policy_counts(data_dir, "train", pcfg) == +stats


def test_collate_pads_and_masks(data_dir, scfg, bins):
    evs = pipeline.load_serialized(data_dir, "train", scfg, bins, PipelineConfig(serialize=scfg))[:3]
    b = pipeline.collate(evs)
    lengths = [len(e["coords"]) for e in evs]
    L = max(lengths)
    assert b["coords"].shape == (3, L, 3) and b["targets"].shape == (3, L, scfg.k, 3)
    assert b["mask"].sum(1).tolist() == lengths
    for i, e in enumerate(evs):
        n = lengths[i]
        np.testing.assert_array_equal(b["coords"][i, :n].numpy(), e["coords"])
        np.testing.assert_array_equal(b["target_mask"][i, :n].numpy(), e["target_mask"])
        assert (b["track_id"][i, n:] == -1).all() and not b["target_mask"][i, n:].any()
        assert b["track_id"][i, :n].tolist() == e["track_id"].tolist()
    assert str(b["track_id"].dtype) == "torch.int64" and str(b["mask"].dtype) == "torch.bool"
    # The Ray path's rows (flat lists, arriving as numpy object arrays) collate identically.
    table = pipeline._to_arrow(evs)
    numpy_batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    b2 = pipeline.collate(numpy_batch)
    assert "target_energy" in b2  # the neighbours' energies survive the Ray rows (knn_energy)
    for i, e in enumerate(evs):
        np.testing.assert_array_equal(b2["target_energy"][i, :lengths[i]].numpy(),
                                      e["target_energy"])
    for key in b:
        assert (b[key] == b2[key]).all(), key


def test_serialize_worker_buckets_by_length(data_dir, scfg, bins):
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(data_dir.glob("toy-*.parquet"))[0], columns=pipeline.READ_COLUMNS)
    cfg = PipelineConfig(serialize=scfg, split_fractions=(1.0, 0.0, 0.0), bucket_by_length=True)
    out = pipeline.SerializeBatch(bins.content, cfg.to_dict(), "train")(table)
    n = out.column("n_points").to_numpy()
    assert len(n) == 20 and (np.diff(n) >= 0).all()


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_ray_pipeline_is_reproducible_and_matches_the_plain_path(ray_session, data_dir, scfg, bins):
    cfg = PipelineConfig(serialize=scfg, batch_size=4, shuffle_seed=3, shuffle_buffer=16, serialize_concurrency=1,
                         map_batch_size=16)

    def run():
        ds = pipeline.build_dataset(data_dir, "train", cfg, bins)
        return list(pipeline.torch_batches(ds, cfg, epoch=0))

    first, second = run(), run()
    assert len(first) == len(second) > 1
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] == b[key]).all(), key

    plain = {int(e["event_id"]): e for e in pipeline.load_serialized(data_dir, "train", scfg, bins, cfg)}
    seen = []
    for batch in first:
        for i, eid in enumerate(batch["event_id"].tolist()):
            n = int(batch["mask"][i].sum())
            e = plain[eid]
            np.testing.assert_array_equal(batch["coords"][i, :n].numpy(), e["coords"])
            np.testing.assert_array_equal(batch["targets"][i, :n].numpy(), e["targets"])
            np.testing.assert_array_equal(batch["energy"][i, :n].numpy(), e["energy"])
            assert float(batch["weight"][i]) == float(e["weight"])
            seen.append(eid)
    assert sorted(seen) == sorted(plain)  # same events; 0/1-point events skipped
    assert seen != sorted(seen)  # and the seeded shuffle did shuffle
