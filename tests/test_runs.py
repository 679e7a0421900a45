"""fm4npp.runs: tracking URI rules and the MLflow helpers the studies use."""

from __future__ import annotations

import pytest

from fm4npp import paths, runs
from conftest import fresh_mlflow_uri


def test_default_uri_is_absolute_and_env_overrides(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = runs.tracking_uri()
    assert uri == f"sqlite:///{paths.data_home() / 'mlflow.db'}" and uri.startswith("sqlite:////")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    assert runs.tracking_uri() == "sqlite:////tmp/x.db"
    assert "--backend-store-uri sqlite:////tmp/x.db" in runs.ui_command()


def test_parent_child_runs_metrics_and_search(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    parent = runs.start_run("study", {"axis": "width"}, {"study": "s1"}, experiment="e")
    child = runs.start_run("trial-1", {"lr": 2e-4}, {"study": "s1"}, parent_run_id=parent,
                           experiment="e")
    runs.log_metrics_history(child, [{"step": 1, "loss": 2.0, "note": "x"},
                                     {"step": 2, "loss": 1.0}])
    runs.log_metrics(child, {"loss": 0.5}, step=2)  # a resumed run re-logging a step
    assert runs.metric_history(child, "loss") == [(1, 2.0), (2, 0.5)]
    runs.end_run(child)
    found = runs.find_runs("e", "tags.study = 's1'", status="FINISHED")
    assert [r.info.run_id for r in found] == [child]
    assert found[0].data.tags[runs.PARENT_TAG] == parent
    assert found[0].data.params["lr"] == "0.0002"
    # the same stable name finds the same run again
    again, resumed = runs.get_or_start_run("trial-1", {"lr": 2e-4, "new": 1}, experiment="e")
    assert (again, resumed) == (child, True)
    assert runs.find_runs("nope") == []


def test_same_trial_name_under_two_parents_is_two_runs(tmp_path, monkeypatch):
    """The model study's w32-d100-s200 and the data study's are different trials: resuming one
    must never take over the other (it once did, and the model study lost a point)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    a, _ = runs.get_or_start_run("model_scaling-x", experiment="e")
    b, _ = runs.get_or_start_run("data_scaling-x", experiment="e")
    in_a, resumed_a = runs.get_or_start_run("w32-d100-s200", parent_run_id=a, experiment="e")
    in_b, resumed_b = runs.get_or_start_run("w32-d100-s200", parent_run_id=b, experiment="e")
    assert in_a != in_b and not resumed_a and not resumed_b
    assert runs.get_or_start_run("w32-d100-s200", parent_run_id=a, experiment="e") == (in_a, True)
