"""Data mixtures (issue 21): the spec and its refusals, the schedule's proportions and
determinism, each event serialized with its own component's bins, the world-size independent
in-memory order despite event ids repeated across components, and a short pretraining run on
two detectors whose mixture is read back from the checkpoint and MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import fresh_mlflow_uri, make_event_table
from fm4npp.data import mixture

K = 4


def _fit(d, detector=None, **kw):
    from fm4npp.serialize.bins import fit_bins_from_dir, save_bins
    from fm4npp.serialize.config import SerializeConfig

    scfg = SerializeConfig(k=K, n_difficulty_bins=3, **({"detector": detector} if detector else {}), **kw)
    save_bins(fit_bins_from_dir(d, scfg), d / "bins.json")
    return d


@pytest.fixture(scope="module")
def tpc(tmp_path_factory):
    """sPHENIX-like TPC events (ids 0..59), bins fitted on them."""
    from fm4npp.data.convert import write_dataset

    d = tmp_path_factory.mktemp("tpc")
    write_dataset([make_event_table(30, 1, max_tracks=4), make_event_table(30, 2, first_event_id=30, max_tracks=4)], d)
    return _fit(d)


@pytest.fixture(scope="module")
def aleph(tmp_path_factory):
    """ALEPH events at the Z pole (ids 0..23: the same ids as the TPC set's first ones)."""
    from fm4npp.sim.config import GeneratorConfig, SimConfig
    from fm4npp.sim.run import run_simulation

    d = tmp_path_factory.mktemp("aleph")
    run_simulation(SimConfig(events=24, seed=3, events_per_shard=24, detector="aleph",
                             generator=GeneratorConfig(facility="lep_z")), d, progress=False)
    return _fit(d, detector="aleph")


def _spec(tpc, aleph, w=(0.75, 0.25)):
    return f"tpc={tpc}:{w[0]},aleph={aleph}:{w[1]}"


# ------------------------------------------------------------------ spec

def test_spec_parses_normalises_and_round_trips(tmp_path):
    comps = mixture.parse_spec("a=rel/x:2, b=/y:1,c.3=/z:1")
    assert [c.name for c in comps] == ["a", "b", "c.3"] and [c.index for c in comps] == [0, 1, 2]
    assert [c.weight for c in comps] == [0.5, 0.25, 0.25] and comps[0].given == 2.0
    assert comps[0].path.endswith("/rel/x") and comps[0].path.startswith("/")  # resolved
    assert mixture.parse_spec(mixture.format_spec(comps)) == comps
    plain = tmp_path / "run=3,w:1"  # a directory whose name looks like a spec stays one data set
    plain.mkdir()
    assert not mixture.is_mixture(str(plain)) and not mixture.is_mixture("/data/sphenix")
    assert mixture.is_mixture("a=/x:1")


@pytest.mark.parametrize("spec,message", [
    ("a=/x", "part 1 'a=/x': expected NAME=PATH:WEIGHT"),
    ("a=/x:0.5,b=/y", "part 2 'b=/y': expected NAME=PATH:WEIGHT"),
    ("a=/x:0.5,", "part 2 '': expected"),
    ("=/x:1", "expected NAME=PATH:WEIGHT"),
    ("a=/x:0", "weight '0' must be a positive number"),
    ("a=/x:1,b=/y:-0.5", "part 2 'b=/y:-0.5': weight '-0.5' must be a positive"),
    ("a=/x:nan", "weight 'nan' must be a positive"),
    ("a=/x:half", "weight 'half' is not a number"),
    ("a=/x:1,a=/y:1", "part 2 'a=/y:1': name 'a' appears twice"),
    ("a b=/x:1", "name 'a b' may hold only"),
])
def test_malformed_specs_are_refused_naming_the_part(spec, message):
    with pytest.raises(mixture.MixtureError, match=message.replace("(", r"\(").replace(".", r"\.")):
        mixture.parse_spec(spec)


def test_config_resolves_a_mixture_and_keeps_a_plain_path(tpc, aleph):
    from fm4npp.pretrain.config import PretrainConfig

    cfg = PretrainConfig(preset="w16", data=_spec(tpc, aleph)).resolved()
    assert cfg.bins == "" and mixture.parse_spec(cfg.data) == mixture.parse_spec(_spec(tpc, aleph))
    assert cfg.resolved() == cfg
    plain = PretrainConfig(preset="w16", data=str(tpc)).resolved()
    assert plain.data == str(tpc) and plain.bins == str(tpc / "bins.json")
    with pytest.raises(ValueError, match="with a data mixture"):
        PretrainConfig(preset="w16", data=_spec(tpc, aleph), bins=str(tpc / "bins.json")).resolved()
    with pytest.raises(ValueError, match="weight 'x'"):
        PretrainConfig(preset="w16", data=f"tpc={tpc}:x").resolved()


# ------------------------------------------------------------------ schedule

def test_schedule_proportions_match_the_weights_and_follow_the_seed():
    comps = mixture.parse_spec("a=/a:0.5,b=/b:0.3,c=/c:0.2")
    batch, window = 8, mixture.WINDOW_BATCHES * 8
    s = mixture.Schedule(comps, window, seed=1)
    labels, k = s.draws(0, 50 * window)
    per_window = np.stack([np.bincount(labels[i:i + window], minlength=3) for i in range(0, len(labels), window)])
    assert (per_window == mixture.apportion(window, [0.5, 0.3, 0.2])).all()  # exact in every window
    np.testing.assert_allclose(np.bincount(labels) / len(labels), [0.5, 0.3, 0.2], atol=1 / window)
    per_batch = np.stack([np.bincount(labels[i:i + batch], minlength=3) for i in range(0, len(labels), batch)])
    np.testing.assert_allclose(per_batch.mean(0) / batch, [0.5, 0.3, 0.2], atol=0.01)
    for c in range(3):  # k counts the component's earlier draws
        assert (k[labels == c] == np.arange((labels == c).sum())).all()
    a, b = s.draws(37, 300)  # any slice agrees with the whole stream
    assert (a == labels[37:300]).all() and (b == k[37:300]).all()
    assert (mixture.Schedule(comps, window, seed=1).draws(0, 500)[0] == labels[:500]).all()
    assert (mixture.Schedule(comps, window, seed=2).draws(0, 500)[0] != labels[:500]).mean() > 0.3
    with pytest.raises(mixture.MixtureError, match="component 'b': weight 0.001"):
        mixture.Schedule(mixture.parse_spec("a=/a:0.999,b=/b:0.001"), 64, 0)


def test_memory_batches_cycle_each_component_and_do_not_depend_on_the_world_size():
    comps = mixture.parse_spec("big=/a:0.5,small=/b:0.5")
    sizes, batch = [40, 6], 8
    s = mixture.Schedule(comps, mixture.WINDOW_BATCHES * batch, 0)
    picks = [p for step in range(10) for p in mixture.memory_batch(s, step, batch, sizes, seed=0)]
    small = [i for c, i in picks if c == 1]
    for e in range(len(small) // 6):  # each epoch of the small component: every event once
        assert sorted(small[6 * e:6 * e + 6]) == list(range(6))
    big = [i for c, i in picks if c == 0]
    assert sorted(big[:40]) == list(range(40))
    # a fresh schedule (another process, a resumed run) gives the same batch of a step
    again = mixture.memory_batch(mixture.Schedule(comps, mixture.WINDOW_BATCHES * batch, 0), 7, batch, sizes, 0)
    assert again == picks[7 * batch:8 * batch]


def test_mixed_stream_cycles_and_resumes_where_it_stopped():
    comps = mixture.parse_spec("a=/a:0.5,b=/b:0.5")
    data = {0: list(range(100, 120)), 1: [0, 1, 2]}

    def make():
        factories = [lambda epoch, c=c: iter([(c, epoch, x) for x in data[c]]) for c in (0, 1)]
        return mixture.MixedStream(factories, mixture.Schedule(comps, 32, 5), ["a", "b"])

    whole = make()
    taken = [whole.take(4) for _ in range(8)]
    assert max(e for c, e, _ in sum(taken, []) if c == 1) >= 3  # the small one was cycled
    part = make()
    [part.take(4) for _ in range(3)]
    resumed = make()
    resumed.restore(json.loads(json.dumps(part.position())))  # as a checkpoint stores it
    assert [resumed.take(4) for _ in range(5)] == taken[3:]


def _planned(comps, counts, window):
    """A PlannedStream + MixedStream over a fake shared stream of read_plan items: event (c, shard, row)."""
    from fm4npp.data.mixed import PlannedStream, read_plan, shuffled

    plan = read_plan(comps, counts, window)
    per_pass = {i: e + 1 for i, e, _, _ in plan}

    def one_pass():
        for i, e, j, take in plan:
            yield from ((i, e, per_pass[i], (i, j, r)) for r in range(take or counts[i][j]))

    reader = PlannedStream(one_pass)
    factories = [lambda g, c=c: shuffled(reader.events(c, g), 16, [0, c, g]) for c in range(len(comps))]
    return plan, reader, mixture.MixedStream(factories, mixture.Schedule(comps, window, 5), [c.name for c in comps])


def test_one_stream_for_all_components_reads_what_the_schedule_draws_and_resumes():
    from fm4npp.data.mixed import read_plan

    comps = mixture.parse_spec("a=/a:0.6,b=/b:0.3,c=/c:0.1")
    rng = np.random.default_rng(0)
    counts = [rng.integers(50, 150, n).tolist() for n in (20, 3, 7)]
    once = read_plan(comps, counts)  # memory mode: each component's shards once, interleaved
    assert sorted((i, j) for i, _, j, _ in once) == [(i, j) for i in range(3) for j in range(len(counts[i]))]
    window = 128
    plan, reader, stream = _planned(comps, counts, window)
    # a pass holds exactly what the schedule draws in its whole windows: every component
    # through at least one epoch, only the last epoch of a pass cut (at an event)
    per_window = mixture.apportion(window, [0.6, 0.3, 0.1])
    supply = [sum(t or counts[i][j] for c, _, j, t in plan if c == i) for i in range(3)]
    windows = supply[0] // per_window[0]
    assert (np.array(supply) == windows * per_window).all()
    assert all(s >= sum(n) for s, n in zip(supply, counts))  # the fewest such windows:
    assert any((windows - 1) * k < sum(n) for k, n in zip(per_window, counts))
    assert all(t is None for i, e, j, t in plan if e < max(e2 for i2, e2, _, _ in plan if i2 == i))
    taken, peak = [], 0
    for _ in range(4 * windows * window // 8):  # four passes
        taken.append(stream.take(8))
        peak = max(peak, sum(len(q) for q in reader.queues.values()))
    assert peak < 2 * 150 + 16 * 3  # about a shard and a shuffle buffer per component
    flat = [e for b in taken for e in b]
    for c in range(3):  # each pass: its epochs in turn, each epoch every event once
        mine = [e for e in flat if e[0] == c]
        assert len(mine) == 4 * supply[c]
        first = mine[: sum(counts[c])]
        assert sorted(first) == sorted((c, j, r) for j, n in enumerate(counts[c]) for r in range(n))
    # a stream restored from a checkpointed position goes on with the same events
    _, reader2, part = _planned(comps, counts, window)
    [part.take(8) for _ in range(333)]
    pos = json.loads(json.dumps({**part.position(), "per_pass": [reader2.per_pass.get(c) for c in range(3)]}))
    _, reader3, resumed = _planned(comps, counts, window)
    resumed.restore(pos)
    reader3.restore(dict(enumerate(resumed.epoch)), dict(enumerate(pos["per_pass"])))
    assert [resumed.take(8) for _ in range(len(taken) - 333)] == taken[333:]


# ------------------------------------------------------------------ Ray Data path

@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _component_inputs(tpc, aleph):
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.inputs import components, load_bins
    from fm4npp.pretrain.run import pipeline_config

    cfg = PretrainConfig(preset="w16", data=_spec(tpc, aleph)).resolved()
    comps, bins_list = components(cfg), load_bins(cfg)
    return comps, bins_list, [pipeline_config(cfg, b) for b in bins_list]


@pytest.fixture(scope="module")
def per_component(ray_local, tpc, aleph):
    """The two components' training splits, one materialized Ray dataset each (build_mixture)."""
    from fm4npp.pretrain.sources import build_mixture

    comps, bins_list, pcfgs = _component_inputs(tpc, aleph)
    return [ds.materialize() for ds in build_mixture(comps, "train", pcfgs, bins_list)]


@pytest.mark.slow
def test_ray_mixture_serializes_each_event_with_its_own_bins(per_component, tpc, aleph):
    from fm4npp.data import pipeline
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.sources import MixtureMemorySource, MixtureStreamSource, mixture_batches

    comps, bins_list, pcfgs = _component_inputs(tpc, aleph)
    assert bins_list[0].hash != bins_list[1].hash and bins_list[1].content["config"]["detector"] == "aleph"
    datasets = per_component

    def run(seed):  # one schedule window: 128 events
        return list(mixture_batches(datasets, comps, batch_size=8, seed=seed, shuffle_buffer=16,
                                            n_batches=mixture.WINDOW_BATCHES))

    first, again, other = run(0), run(0), run(1)
    for a, b in zip(first, again):
        assert all((a[key] == b[key]).all() for key in a)
    assert any((a["dataset"] != b["dataset"]).any() or (a["event_id"] != b["event_id"]).any()
               for a, b in zip(first, other))
    share = np.concatenate([b["dataset"].numpy() for b in first])
    assert abs((share == 1).mean() - 0.25) <= 1 / len(share)  # exact over a whole window

    plain = [{int(e["event_id"]): e for e in pipeline.load_serialized(c.path, "train", p.serialize, b, p)}
             for c, p, b in zip(comps, pcfgs, bins_list)]
    assert set(plain[0]) & set(plain[1])  # event ids collide across the components
    for batch in first:
        for i, (c, eid) in enumerate(zip(batch["dataset"].tolist(), batch["event_id"].tolist())):
            n, e = int(batch["mask"][i].sum()), plain[c][eid]
            np.testing.assert_array_equal(batch["coords"][i, :n].numpy(), e["coords"])
            np.testing.assert_array_equal(batch["energy"][i, :n].numpy(), e["energy"])
            assert float(batch["weight"][i]) == float(e["weight"])
    # ...and another component's bins would have serialized it differently
    ev = next(iter(plain[1].values()))
    raw = next(x for x in pipeline.iter_split_events(aleph, "train", pcfgs[1]) if int(x["event_id"]) == int(ev["event_id"]))
    wrong = pipeline.serialize_event(raw, bins_list[0], pcfgs[0].serialize)
    assert not np.array_equal(wrong["coords"], ev["coords"])

    # in memory: events of both components with the same id stay apart, and a step's global
    # batch is the same whatever the number of workers
    cfg = PretrainConfig(preset="w16", data=_spec(tpc, aleph), batch_size=8, seed=3)
    one = MixtureMemorySource(datasets, comps, cfg, 0, 1)
    assert [len(e) for e in one.events] == [len(p) for p in plain]
    two = [MixtureMemorySource(datasets, comps, cfg, r, 2) for r in (0, 1)]
    for step in (0, 5, 40):
        whole, halves = one.batch(step), [s.batch(step) for s in two]
        for key in ("dataset", "event_id", "weight"):
            assert whole[key].tolist() == halves[0][key].tolist() + halves[1][key].tolist()

    # streamed: a source restored from a checkpointed position continues the same batches
    stream = MixtureStreamSource(datasets, comps, cfg, 1)
    ahead = [stream.batch(s) for s in range(12)]
    resumed = MixtureStreamSource(datasets, comps, cfg, 1)
    [resumed.batch(s) for s in range(5)]
    pos = json.loads(json.dumps(resumed.position()))
    resumed = MixtureStreamSource(datasets, comps, cfg, 1)
    resumed.restore(pos)
    for a in ahead[5:]:
        b = resumed.batch(0)
        assert a["dataset"].tolist() == b["dataset"].tolist() and a["event_id"].tolist() == b["event_id"].tolist()


@pytest.mark.slow
def test_one_pipeline_serializes_each_event_as_its_component_alone(per_component, tpc, aleph):
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.sources import (MixtureMemorySource, MixtureStreamSource, materialize, mixture_batches,
                                         mixture_dataset)

    comps, bins_list, pcfgs = _component_inputs(tpc, aleph)
    alone = [materialize(ds) for ds in per_component]
    once = mixture_dataset(comps, "train", pcfgs, bins_list).materialize()  # one read, one serialization pool
    shared = materialize(once)
    assert [int(e["dataset"]) for e in shared] == sorted(int(e["dataset"]) for e in shared)
    assert len(shared) == sum(len(a) for a in alone)
    for got, want in zip(shared, [e for a in alone for e in a]):  # both sorted by (dataset, id)
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    cfg = PretrainConfig(preset="w16", data=_spec(tpc, aleph), batch_size=8, seed=3)
    one = MixtureMemorySource([once], comps, cfg, 0, 1)
    per = MixtureMemorySource(per_component, comps, cfg, 0, 1)
    for step in (0, 9):
        a, b = one.batch(step), per.batch(step)
        assert all((a[k] == b[k]).all() for k in a)

    # streamed: a pass is what the schedule draws in whole windows; the batches mix the
    # components in the weights' exact proportions per window, each event as serialized alone
    window = mixture.WINDOW_BATCHES * 8
    stream = mixture_dataset(comps, "train", pcfgs, bins_list, window=window).materialize()
    by_comp = np.bincount(stream.to_pandas()["dataset"].to_numpy())
    per_window = mixture.apportion(window, [c.weight for c in comps])
    assert (by_comp == by_comp[0] // per_window[0] * per_window).all()
    assert (by_comp >= [len(a) for a in alone]).all()
    batches = list(mixture_batches([stream], comps, 8, seed=1, shuffle_buffer=16, n_batches=3 * window // 8))
    share = np.concatenate([b["dataset"].numpy() for b in batches])
    assert abs((share[:window] == 1).mean() - comps[1].weight) <= 1 / window
    lookup = [{int(e["event_id"]): e for e in a} for a in alone]
    for batch in batches[::5]:
        for i, (c, eid) in enumerate(zip(batch["dataset"].tolist(), batch["event_id"].tolist())):
            n = int(batch["mask"][i].sum())
            np.testing.assert_array_equal(batch["coords"][i, :n].numpy(), lookup[c][eid]["coords"])
    stream_src = MixtureStreamSource([stream], comps, cfg, 1)
    ahead = [stream_src.batch(s) for s in range(40)]
    resumed = MixtureStreamSource([stream], comps, cfg, 1)
    [resumed.batch(s) for s in range(23)]
    pos = json.loads(json.dumps(resumed.position()))
    resumed = MixtureStreamSource([stream], comps, cfg, 1)
    resumed.restore(pos)
    for a in ahead[23:]:
        b = resumed.batch(0)
        assert a["dataset"].tolist() == b["dataset"].tolist() and a["event_id"].tolist() == b["event_id"].tolist()


# ------------------------------------------------------------------ pretraining

def test_refusals_name_the_component(tpc, aleph, tmp_path):
    import shutil

    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.inputs import RefusedError, check_inputs

    def cfg(spec):
        return PretrainConfig(preset="w16", data=spec).resolved()

    check_inputs(cfg(_spec(tpc, aleph)))
    with pytest.raises(RefusedError, match="component 'aleph': data directory .*nowhere does not exist"):
        check_inputs(cfg(f"tpc={tpc}:1,aleph={tmp_path / 'nowhere'}:1"))
    k5 = tmp_path / "k5"
    shutil.copytree(aleph, k5)
    from fm4npp.serialize.bins import fit_bins_from_dir, save_bins
    from fm4npp.serialize.config import SerializeConfig

    save_bins(fit_bins_from_dir(k5, SerializeConfig(k=5, detector="aleph")), k5 / "bins.json")
    with pytest.raises(RefusedError, match="component 'k5': bins .* fitted with k=5, component 'tpc' with k=4"):
        check_inputs(cfg(f"tpc={tpc}:1,k5={k5}:1"), skip_validation=True)
    shutil.copy(tpc / "bins.json", k5 / "bins.json")  # the TPC set's bins on the ALEPH data
    with pytest.raises(RefusedError, match="component 'k5': serialization bins .* fitted on another data set"):
        check_inputs(cfg(f"tpc={tpc}:1,k5={k5}:1"))


def test_a_mixture_is_one_pipeline_unless_a_stream_is_split_between_workers(tpc, aleph):
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.sources import train_keys

    def keys(**kw):
        return train_keys(PretrainConfig(preset="w16", data=_spec(tpc, aleph), **kw))

    assert keys(data_mode="memory", workers=2) == keys(data_mode="stream", workers=1) == ["train"]
    assert keys(data_mode="stream", workers=2) == ["train_0", "train_1"]
    assert train_keys(PretrainConfig(preset="w16", data=str(tpc), data_mode="stream", workers=2)) == ["train"]


@pytest.mark.slow
def test_pretraining_on_a_two_detector_mixture_records_it(ray_local, tpc, aleph, tmp_path, monkeypatch):
    from fm4npp import runs
    from fm4npp.model.io import from_pretrained
    from fm4npp.pretrain.checkpoint import load_train_state
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.inputs import mixture_record
    from fm4npp.pretrain.run import run_pretraining

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    cfg = PretrainConfig(preset="w16", n_layers=1, data=_spec(tpc, aleph, (0.5, 0.5)), steps=2, warmup=1,
                         lr=3e-3, batch_size=4, log_every=1, val_every=2, ckpt_every=2, val_events=8,
                         storage_path=str(tmp_path / "runs"), experiment="test", max_failures=0)
    out = run_pretraining(cfg)
    assert out["steps"] == 2 and np.isfinite(out["val_mse"]) and out["events"] == 8
    want = mixture_record(cfg.resolved())
    assert [r["name"] for r in want] == ["tpc", "aleph"] and want[1]["detector"] == "aleph"
    assert want[1]["path"] == str(aleph) and want[0]["weight"] == 0.5 and len(want[1]["bins_hash"]) == 64
    _, extra = from_pretrained(out["pretrained"])
    state = load_train_state(out["checkpoint"])
    params = runs.client().get_run(out["mlflow_run_id"]).data.params
    for where in (extra, state, params):
        assert mixture.read_record(where) == want
    assert extra["bins_hash"] == state["bins_hash"] == params["bins_hash"] == mixture.record_hash(want)
    assert float(params["mixture.aleph.weight"]) == 0.5
    assert [c.name for c in mixture.components_of(want)] == ["tpc", "aleph"]
    # the data sets its bins were fitted on: how the downstream tells its own data from others
    from fm4npp.serialize.bins import load_bins

    srcs = [load_bins(d / "bins.json").content["fit"]["source"] for d in (tpc, aleph)]
    assert extra["bins_sources"] == state["bins_sources"] == srcs and all(srcs)


def test_a_mixtures_training_set_is_its_components_together(tpc, aleph):
    import dataclasses

    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.study.trial import train_set_spacepoints

    cfg = PretrainConfig(preset="w16", data=_spec(tpc, aleph, (0.5, 0.5)), max_points=400).resolved()
    one = [train_set_spacepoints(dataclasses.replace(cfg, data=str(d), bins=str(d / "bins.json")))
           for d in (tpc, aleph)]
    assert all(n > 0 for n in one)
    assert train_set_spacepoints(cfg) == sum(one)
