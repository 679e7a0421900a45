"""The objectives study: variants, the equal-compute grid, the table and the bar from MLflow
cells, and (slow) the smoke preset end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fm4npp.study.objectives import PRESETS, flops_per_token, grid, parse_variant
from fm4npp.study.presets import trial_key, trial_steps
from conftest import fresh_mlflow_uri

ROOT = Path(__file__).resolve().parents[1]


def test_variants_parse_and_bad_ones_are_refused_by_name():
    assert parse_variant("knn") == {"objective": "knn"}
    assert parse_variant("masked-m60-bi") == {"objective": "masked", "mask_fraction": 0.6,
                                              "bidirectional": True}
    for bad, why in [("knn-bi", "later points"), ("knn-m30", "hides no points"),
                     ("nope", "unknown objective 'nope'"), ("masked_bi", "unknown objective"),
                     ("masked-60", "expected <objective>")]:
        with pytest.raises(ValueError, match=why):
            parse_variant(bad)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_variant_trains_at_the_same_flops(name):
    preset = PRESETS[name]
    sp_steps = {preset.width: preset.steps}
    from fm4npp.study.objectives import study_preset

    sp = study_preset(preset)
    assert sp.steps == sp_steps
    points = grid(preset)
    keys = [trial_key(p, 0, sp) for p in points]
    assert len(set(keys)) == len(keys)  # every variant its own run
    ref = flops_per_token(preset.width, {"objective": "knn"}, preset.pretrain) * preset.steps
    for p in points:
        fields = {k: v for k, v in p.items() if k not in ("width", "budget")}
        c = flops_per_token(preset.width, fields, preset.pretrain) * trial_steps(p, sp)
        assert abs(c / ref - 1) < 1.5 / preset.steps + 1e-3, (p, c / ref)  # one step of rounding
        if p.get("bidirectional"):
            assert trial_steps(p, sp) < 0.6 * preset.steps  # two mixers per block: fewer steps


@pytest.fixture
def mlflow_db(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))


def _cells(study, rows):
    """Finished downstream cells as fm4npp.downstream.studies.run_cells logs them.
    A row: (task, source, backbone, n, seed, {metric: value})."""
    from fm4npp import runs
    from fm4npp.downstream.studies import EXPERIMENT

    parent = runs.start_run(study, tags={"study": study, "fm4npp.study_parent": "1"},
                            experiment=EXPERIMENT)
    for task, source, backbone, n, seed, metrics in rows:
        rid = runs.start_run(f"{study}/{task}-{backbone or source}-n{n}-s{seed}",
                             parent_run_id=parent, experiment=EXPERIMENT,
                             tags={"study": study, "task": task, "source": source,
                                   "backbone": backbone, "n_train": str(n), "seed": str(seed)})
        runs.log_metrics(rid, {**metrics, "n_train_events": n, "trainable_params": 1000}, step=0)
        runs.end_run(rid)
    runs.end_run(parent)


def _pid(acc, rec, prec):
    return {"accuracy": acc, "macro_recall": rec, "macro_precision": prec}


def test_table_bar_interval_and_label_saving(mlflow_db, tmp_path):
    from fm4npp.study.objectives_table import objectives_table, to_markdown, write_table

    rows = []
    for seed, jitter in ((0, 0.0), (1, 0.01)):
        for n, base in ((10, 0.50), (40, 0.60), (160, 0.70)):
            rows.append(("pid", "raw", "", n, seed, _pid(base + jitter, base, base)))
            # label saving reads macro recall (accuracy rewards predicting the majority class)
            rows.append(("pid", "scratch", "", n, seed, _pid(0.9, base - 0.1 + jitter, base)))
            # FM "good": above AdapterOnly beyond the interval on every metric
            rows.append(("pid", "fm", "good", n, seed, _pid(base + 0.1 + jitter, base + 0.12 + jitter, base + 0.1)))
            # FM "close": better on average, but its interval overlaps AdapterOnly's
            rows.append(("pid", "fm", "close", n, seed, _pid(base + 0.005 + jitter, base + 0.1, base - 0.1)))
    _cells("obj-t", rows)
    t = objectives_table("obj-t", "fm4npp-downstream")
    assert t["tasks"] == ["pid"]
    good, close = t["vs_adapter_only"]["FM good"]["pid"], t["vs_adapter_only"]["FM close"]["pid"]
    assert all(x["beyond_interval"] for x in good.values())
    assert not close["accuracy"]["beyond_interval"] and close["accuracy"]["delta"] > 0
    assert not close["macro_precision"]["beyond_interval"]
    row = next(r for r in t["rows"] if r["row"] == "FM good")
    assert row["n_train"] == 160 and row["seeds"] == [0, 1]
    assert row["metrics"]["accuracy"]["lo"] == pytest.approx(0.80)
    assert row["metrics"]["accuracy"]["hi"] == pytest.approx(0.81)
    # from scratch's best macro recall (0.605 at 160) is reached by the good FM at its first
    # subset (0.625 at 10): a lower bound of 16x
    s = t["label_saving_vs_scratch"]["FM good"]["pid"]
    assert s["factor"] == pytest.approx(16.0) and s["bound"] == "lower"
    # the bar is over all three tasks: PID alone cannot meet it
    bar = t["bar"]
    assert bar["best"] == "FM good" and not bar["met"] and not bar["beats_adapter_only_everywhere"]
    assert bar["tasks_not_measured"] == ["tracking", "noise"] and bar["metrics_total"] == 9
    assert "tasks not measured" in to_markdown(t) and "FM close" in to_markdown(t)
    more = []
    for seed, jitter in ((0, 0.0), (1, 0.01)):
        for n in (10, 160):
            more.append(("noise", "raw", "", n, seed, _pid(0.9 + jitter, 0.6 + jitter, 0.6)))
            more.append(("noise", "fm", "good", n, seed, _pid(0.95 + jitter, 0.7 + jitter, 0.7)))
            more.append(("tracking", "raw", "", n, seed, {"ari_event_mean": 0.5 + jitter,
                                                          "efficiency": 0.5, "purity": 0.5}))
            more.append(("tracking", "fm", "good", n, seed, {"ari_event_mean": 0.6 + jitter,
                                                             "efficiency": 0.6 + jitter, "purity": 0.6}))
    _cells("obj-t", more)
    bar = objectives_table("obj-t", "fm4npp-downstream")["bar"]
    assert bar["best"] == "FM good" and bar["beats_adapter_only_everywhere"] and bar["met"]
    t = objectives_table("obj-t", "fm4npp-downstream")
    md, js = write_table(t, tmp_path / "out")
    assert "Bar met" in md.read_text() and json.loads(js.read_text())["bar"]["met"]


def test_one_seed_is_never_beyond_an_interval(mlflow_db):
    from fm4npp.study.objectives_table import objectives_table

    _cells("obj-1", [("pid", "raw", "", 10, 0, _pid(0.5, 0.5, 0.5)),
                     ("pid", "fm", "knn", 10, 0, _pid(0.9, 0.9, 0.9))])
    v = objectives_table("obj-1", "fm4npp-downstream")["vs_adapter_only"]["FM knn"]["pid"]
    assert all(x["delta"] > 0.3 and not x["beyond_interval"] for x in v.values())


def test_bar_not_met_shows_the_miss(mlflow_db):
    from fm4npp.study.objectives_table import objectives_table, to_markdown

    rows = []
    for seed in (0, 1):
        for n in (10, 100):
            rows.append(("noise", "raw", "", n, seed, _pid(0.9, 0.7, 0.7)))
            rows.append(("noise", "scratch", "", n, seed, _pid(0.9, 0.7, 0.7)))
            rows.append(("noise", "fm", "knn", n, seed, _pid(0.95, 0.65, 0.75)))
    _cells("obj-miss", rows)
    t = objectives_table("obj-miss", "fm4npp-downstream")
    bar = t["bar"]
    assert not bar["met"] and not bar["beats_adapter_only_everywhere"]
    assert bar["misses"]["noise macro recall"]["delta"] == pytest.approx(-0.05)
    assert "NOT met" in to_markdown(t) and "macro recall" in to_markdown(t)


def test_table_refuses_a_study_without_cells_or_baseline(mlflow_db):
    from fm4npp.study.objectives_table import objectives_table

    with pytest.raises(ValueError, match="no finished downstream cells"):
        objectives_table("nothing", "fm4npp-downstream")
    _cells("obj-nobase", [("pid", "fm", "knn", 10, 0, _pid(0.9, 0.7, 0.7))])
    with pytest.raises(ValueError, match="no finished AdapterOnly"):
        objectives_table("obj-nobase", "fm4npp-downstream")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smoke_objectives_study_end_to_end(tmp_path):
    """The smoke preset as a user runs it (one local Ray instance, the session's default data
    set), then the analysis script on its MLflow runs."""
    env = {**os.environ, "RAY_ADDRESS": "", "MLFLOW_TRACKING_URI": fresh_mlflow_uri(tmp_path)}
    cmd = [sys.executable, str(ROOT / "studies/objectives.py"), "--preset", "smoke",
           "--storage", str(tmp_path / "runs"), "--variants", "knn,masked-bi",
           "--tasks", "pid", "--seeds", "0", "--out", str(tmp_path / "table")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=850)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = json.loads((tmp_path / "table" / "objectives.json").read_text())
    rows = {(x["task"], x["row"]) for x in table["rows"]}
    for task in ("pid",):  # tracking end to end: tests/test_transfer_study.py's smoke run
        assert {(task, "AdapterOnly"), (task, "from scratch"), (task, "FM w16-d100-s60-knn"),
                (task, "FM w16-d100-s31-masked-bi")} == {x for x in rows if x[0] == task}
    # one seed (the intervals over seeds: test_table_bar_interval_and_label_saving)
    assert all(x["seeds"] == [0] and x["n_train"] == max(PRESETS["smoke"].label_counts)
               for x in table["rows"])
    assert set(table["label_saving_vs_scratch"]["FM w16-d100-s31-masked-bi"]) == {"pid"}
    assert "Bar" in r.stdout and "| AdapterOnly | 1 |" in r.stdout
    a = subprocess.run([sys.executable, str(ROOT / "analysis/objectives_table.py"), "--study",
                        "objectives-smoke", "--out", str(tmp_path / "again")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert a.returncode == 0, a.stderr
    assert json.loads((tmp_path / "again" / "objectives.json").read_text())["rows"] == table["rows"]
