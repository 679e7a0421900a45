"""analysis/table2.py: Table 2 from `fm4npp finetune` runs in MLflow, end to end on a tiny data
set (GNN baselines and AdapterOnly), its seed intervals, and its refusal of mismatched data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import fresh_mlflow_uri, make_event_table

pytest.importorskip("torch_geometric")
torch.set_num_threads(1)  # 2 shared cores: a second thread only adds contention


def _run(run_id, task="pid", source="sage", seed=0, data="d1", bins="b1", test="t1", n_train="20",
         **metrics):
    tags = {"fm4npp.run_name": f"finetune-{task}-{source}-{run_id}", "fm4npp.task": task,
            "fm4npp.source": source, "fm4npp.model": source, "fm4npp.seed": str(seed),
            "fm4npp.backbone_size": "w8-L2" if source == "fm" else "", "fm4npp.n_test_events": "10",
            "fm4npp.data_hash": data, "fm4npp.bins_hash": bins, "fm4npp.test_events_hash": test}
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, run_name=tags["fm4npp.run_name"]),
                           data=SimpleNamespace(tags=tags, params={"n_train_events": n_train},
                                                metrics={"trainable_params": 1000.0, **metrics}))


def test_seed_intervals_and_row_order():
    from analysis import table2

    m = dict(accuracy=0.8, macro_recall=0.5, macro_precision=0.6)
    runs = [_run("a", seed=0, **m), _run("b", seed=1, **{**m, "accuracy": 0.9}),
            _run("c", source="raw", **m), _run("d", source="fm", **m)]
    t = table2.build_table(runs, "minmax")
    assert [r["row"] for r in t["rows"]] == ["FM4NPP(w8-L2)", "AdapterOnly", "SAGEConv"]
    acc = t["rows"][2]["tasks"]["pid"]["metrics"]["accuracy"]
    assert (acc["mean"], acc["lo"], acc["hi"]) == pytest.approx((0.85, 0.8, 0.9))
    tacc = table2.build_table(runs, "t")["rows"][2]["tasks"]["pid"]["metrics"]["accuracy"]
    assert tacc["lo"] < 0.8 and tacc["hi"] > 0.9  # t(0.975, 1) = 12.7
    md = table2.to_markdown(t)
    assert "0.8500 [0.8000, 0.9000]" in md and "min-max over seeds" in md
    # FMs of one size from a study's cells: a row per named backbone, not seeds of one row
    named = [_run(k, source="fm", **m) for k in ("e", "f")]
    for r, name in zip(named, ("tpc", "mix")):
        r.data.tags["backbone"] = name
    rows = [r["row"] for r in table2.build_table(runs + named, "minmax")["rows"]]
    assert rows[:3] == ["FM4NPP(w8-L2)", "FM4NPP(w8-L2, mix)", "FM4NPP(w8-L2, tpc)"]
    assert "0.8000 [" not in md.split("AdapterOnly")[1].split("\n")[0]  # one seed: no bracket


def test_tasks_outside_table2_are_skipped_by_name():
    from analysis import table2

    said = []
    runs = [_run("a", accuracy=0.8, macro_recall=0.5, macro_precision=0.6),
            _run("e", task="electron", source="raw", f1=0.4)]
    assert [r.info.run_id for r in table2.select_runs(runs, log=said.append)] == ["a"]
    assert any("'electron' is not in Table 2" in s for s in said)


@pytest.mark.parametrize("field,value", [("data", "d2"), ("bins", "b2"), ("test", "t2")])
def test_refuses_runs_from_mismatched_data(field, value):
    from analysis import table2

    m = dict(accuracy=0.8, macro_recall=0.5, macro_precision=0.6)
    runs = [_run("a", **m), _run("b", source="raw", **{field: value}, **m)]
    with pytest.raises(table2.MismatchError, match="different data") as err:
        table2.build_table(runs)
    assert "finetune-pid-sage-a (a)" in str(err.value) and "finetune-pid-raw-b (b)" in str(err.value)
    # seeds of one cell trained on different numbers of events are no seeds
    with pytest.raises(table2.MismatchError, match="different numbers of events"):
        table2.build_table([_run("a", **m), _run("b", seed=1, n_train="40", **m)])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from fm4npp.data.convert import write_dataset
    from fm4npp.data.io import read_events
    from fm4npp.serialize.bins import fit_bins, save_bins
    from fm4npp.serialize.config import SerializeConfig

    d = tmp_path_factory.mktemp("events")
    write_dataset([make_event_table(100, 3, max_tracks=3)], d)
    save_bins(fit_bins(read_events(d), SerializeConfig(k=4, n_difficulty_bins=3)), d / "bins.json")
    return d


def test_finetune_gnns_then_table2(tmp_path, data_dir, monkeypatch, capsys):
    from analysis import table2
    from fm4npp import runs
    from fm4npp.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    monkeypatch.setenv("FM4NPP_STORAGE", str(tmp_path / "store"))
    common = ["--data", str(data_dir), "--epochs", "2", "--set", "val_events=4"]
    small = ["--set", "gnn.d_hidden=16", "--set", "gnn.n_layers=2", "--set", "exatrkx.embed_hidden=16",
             "--set", "exatrkx.gnn_hidden=16", "--set", "exatrkx.n_iterations=1"]
    for seed in ("0", "1"):
        assert main(["finetune", "--task", "pid", "--model", "sage", "--seed", seed] + common + small) == 0
    out_dir = tmp_path / "trk"
    assert main(["finetune", "--task", "tracking", "--model", "exatrkx", "--out", str(out_dir)]
                + common + small) == 0
    assert main(["finetune", "--task", "pid", "--source", "raw"] + common) == 0  # the older flag
    capsys.readouterr()

    found = runs.find_runs("fm4npp-finetune", status="FINISHED")
    assert len(found) == 4
    by_model = {r.data.tags["fm4npp.model"]: r for r in found}
    assert set(by_model) == {"sage", "exatrkx", "adapter_only"}
    assert by_model["sage"].data.tags["fm4npp.model_family"] == "hit_gnn"
    assert by_model["exatrkx"].data.tags["fm4npp.model_family"] == "track_gnn"
    assert int(by_model["sage"].data.tags["fm4npp.trainable_params"]) > 0
    assert by_model["sage"].data.tags["fm4npp.bins_hash"]  # the data fingerprint is there

    # a saved GNN re-scores to the same metrics
    res = json.loads((out_dir / "result.json").read_text())
    assert main(["evaluate", "--adapter", str(out_dir), "--json", str(tmp_path / "ev.json")]) == 0
    again = json.loads((tmp_path / "ev.json").read_text())["results"][0]["metrics"]
    assert again["ari_pooled"] == pytest.approx(res["metrics"]["ari_pooled"])

    out = tmp_path / "table"
    assert table2.main(["--out", str(out)]) == 0
    t = json.loads((out / "table2.json").read_text())
    rows = {r["row"]: r for r in t["rows"]}
    assert set(rows) == {"AdapterOnly", "SAGEConv", "Exa.TrkX"}
    assert rows["SAGEConv"]["tasks"]["pid"]["seeds"] == [1, 0]
    assert 0 <= rows["Exa.TrkX"]["tasks"]["tracking"]["metrics"]["ari_pooled"]["mean"] <= 1
    md = (out / "table2.md").read_text()
    assert "Exa.TrkX" in md and "Track finding: ARI" in md
    assert r"\begin{tabular}" in (out / "table2.tex").read_text()

    # one more run on other test events: the table is refused, naming the run
    assert main(["finetune", "--task", "noise", "--model", "gcn", "--n-test", "2"] + common + small) == 0
    capsys.readouterr()
    assert table2.main(["--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "different data" in err and "finetune-noise-gcn" in err
