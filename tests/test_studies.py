"""Study grids, presets and concurrency (no Ray), and Figure 5 from a hand-made MLflow study."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.common import (  # noqa: E402
    PAPER_FRACTIONS,
    PRESETS,
    grid_points,
    max_concurrent,
    trial_key,
    trial_overrides,
)


def test_paper_preset_is_the_papers_grid():
    p = PRESETS["paper"]
    assert [pt["width"] for pt in grid_points("model_scaling", p)] == ["m1", "m2", "m3", "m4",
                                                                      "m5", "m6"]
    data = grid_points("data_scaling", p)
    assert {pt["width"] for pt in data} == {"m3"}
    assert [pt["fraction"] for pt in data] == list(PAPER_FRACTIONS) == [0.01, 0.024, 0.116, 0.2,
                                                                        0.476, 1.0]
    compute = grid_points("compute_scaling", p)
    # m1-m3 at 25/50/100 % of their budget, m4-m6 at full budget only (paper, Figure 5c)
    assert len(compute) == 3 * 3 + 3
    assert {pt["budget"] for pt in compute if pt["width"] == "m5"} == {1.0}
    assert trial_overrides({"width": "m2", "budget": 0.25}, 0, p)["steps"] == 12_500
    assert trial_overrides({"width": "m3", "budget": 0.5}, 0, p)["steps"] == 50_000
    assert trial_overrides({"width": "m6"}, 0, p)["workers"] == 64


def test_every_preset_names_real_models_and_known_config_keys():
    from fm4npp.model.presets import PRESETS as MODELS
    from fm4npp.pretrain.config import PretrainConfig

    for name, p in PRESETS.items():
        assert set(p.widths) | {p.data_width} <= set(MODELS), name
        assert set(p.steps) >= set(p.widths) | {p.data_width}, name
        for kind in ("model_scaling", "data_scaling", "compute_scaling"):
            for pt in grid_points(kind, p):
                PretrainConfig.from_dict({**p.pretrain, "batch_size": p.batch_size,
                                          **trial_overrides(pt, 0, p)})


def test_cpu_preset_spans_a_decade_of_parameters():
    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.presets import get_preset

    p = PRESETS["cpu"]
    n = [FM4NPP(get_preset(w, **({"n_layers": p.pretrain["n_layers"]}
                                 if "n_layers" in p.pretrain else {}))).num_params()
         for w in p.widths]
    assert n == sorted(n) and n[-1] / n[0] >= 10


def test_trial_keys_are_stable_and_distinct():
    p = PRESETS["paper"]
    keys = [trial_key(pt, s) for kind in ("model_scaling", "data_scaling", "compute_scaling")
            for pt in grid_points(kind, p) for s in (0, 1)]
    assert trial_key({"width": "m3", "fraction": 0.024}, 1) == "m3-f0.024-s1"
    assert trial_key({"width": "m1", "budget": 0.25}, 0) == "m1-b0.25-s0"
    assert len(set(keys)) == len(keys)


def test_concurrency_from_cluster_resources():
    smoke, paper = PRESETS["smoke"], PRESETS["paper"]
    pts = grid_points("model_scaling", smoke)
    # 0.25 driver + 0.5 worker + 0.25 data actor per trial: a 2-core box runs two at once
    assert max_concurrent(smoke, pts, {"CPU": 2.0}) == 2
    assert max_concurrent(smoke, pts, {"CPU": 1.0}) == 1
    assert max_concurrent(smoke, pts, {"CPU": 0.5}) == 1  # never zero
    small = [{"width": "m1"}, {"width": "m2"}]
    assert max_concurrent(paper, small, {"CPU": 64.0, "GPU": 8.0}) == 8
    assert max_concurrent(paper, grid_points("model_scaling", paper),
                          {"CPU": 512.0, "GPU": 64.0}) == 1  # m6 takes all 64 GPUs


def test_study_refuses_missing_data(tmp_path, capsys):
    from studies.common import main

    assert main("model_scaling", ["--data", str(tmp_path / "nope"),
                                  "--storage", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------- analysis
@pytest.fixture
def mlflow_db(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def _fake_study(name, kind, rows, failed=()):
    """A parent run and FINISHED child runs laid out as studies/common.py writes them."""
    from fm4npp import runs

    from analysis.load import EXPERIMENT

    parent, _ = runs.get_or_start_run(name, tags={"study": name, "study.kind": kind,
                                                  "fm4npp.study_parent": "1"},
                                      experiment=EXPERIMENT)
    for i, r in enumerate(rows):
        key = f"{r['width']}-f{r.get('fraction', 1)}-b{r.get('budget', 1)}-s{r.get('seed', 0)}"
        tags = {"study": name, "study.kind": kind, "trial_key": key, "axis.width": r["width"],
                "seed": str(r.get("seed", 0))}
        for ax in ("fraction", "budget"):
            if ax in r:
                tags[f"axis.{ax}"] = str(r[ax])
        rid = runs.start_run(f"train-{key}", tags=tags, parent_run_id=parent,
                             experiment=EXPERIMENT)
        runs.log_metrics(rid, {"val_mse": r["L"], "params_N": r["N"], "spacepoints_D": r["D"],
                               "flops_C": r["C"]}, step=1)
        runs.end_run(rid, "FAILED" if key in failed else "FINISHED")
    runs.end_run(parent)
    return parent


def test_figure5_from_mlflow_runs(tmp_path, mlflow_db):
    from analysis.figure5 import make_figure5
    from analysis.load import load_study

    rng = np.random.default_rng(0)
    law = lambda n, d: 0.1 + 3.0 * (n / 1e4) ** -0.35 + 0.2 * (d / 1e6) ** -0.25  # noqa: E731
    model_rows, compute_rows = [], []
    for i, (w, n) in enumerate([("w8", 4.5e3), ("w16", 1.1e4), ("w32", 3.5e4), ("w64", 1.2e5),
                                ("m1", 3.7e5)]):
        d = 2e6
        model_rows.append(dict(width=w, N=n, D=d, C=6 * n * d,
                               L=law(n, d) * np.exp(rng.normal(0, 0.003))))
        for b in (0.25, 0.5, 1.0):
            compute_rows.append(dict(width=w, budget=b, N=n, D=d * b, C=6 * n * d * b,
                                     L=law(n, d * b)))
    data_rows = [dict(width="w32", fraction=f, N=3.5e4, D=2e6 * f, C=6 * 3.5e4 * 2e6 * f,
                      L=law(3.5e4, 2e6 * f)) for f in PAPER_FRACTIONS]
    _fake_study("model_scaling-t", "model_scaling", model_rows)
    _fake_study("data_scaling-t", "data_scaling", data_rows)
    parent = _fake_study("compute_scaling-t", "compute_scaling",
                         compute_rows + [dict(width="w8", budget=0.1, N=4.5e3, D=1e5, C=1e9,
                                              L=0.01)],
                         failed={"w8-f1-b0.1-s0"})
    assert len(load_study("compute_scaling-t")) == len(compute_rows)  # FAILED run left out

    out = tmp_path / "fig"
    summary = make_figure5(["model_scaling-t", "data_scaling-t", "compute_scaling-t",
                            "missing-study"], out, n_boot=50)
    for f in ("figure5.png", "figure5.pdf", "figure5a.png", "figure5b.png", "figure5c.pdf"):
        assert (out / f).stat().st_size > 1000, f
    fits = json.loads((out / "fits.json").read_text())["fits"]
    assert fits["a"]["fit_sat"]["alpha"] == pytest.approx(0.35, rel=0.05)
    assert fits["b"]["fit_sat"]["alpha"] == pytest.approx(0.25, rel=0.05)
    assert 0 < fits["a"]["fit"]["alpha"] < 0.35  # a pure law through a floor is flatter
    frontier = fits["c"]["frontier_runs"]
    assert 2 <= len(frontier) < len(compute_rows)
    assert "chinchilla" in fits
    assert summary["studies"] == ["model_scaling-t", "data_scaling-t", "compute_scaling-t"]

    from fm4npp import runs

    arts = [a.path for a in runs.client().list_artifacts(parent, "figure5")]
    assert "figure5/figure5.png" in arts and "figure5/fits.json" in arts
