"""Study grids, presets and concurrency (no Ray), and Figure 5 from a hand-made MLflow study."""

import json

import numpy as np
import pytest

from conftest import fresh_mlflow_uri
from fm4npp.study.presets import (  # noqa: E402
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
    # distinct within a study (the model study's m3 and the compute study's full-budget m3
    # are the same run and may share a name: they live in different studies)
    for kind in ("model_scaling", "data_scaling", "compute_scaling"):
        keys = [trial_key(pt, s, p) for pt in grid_points(kind, p) for s in (0, 1)]
        assert len(set(keys)) == len(keys), kind
    # width, percent of the training data, steps (the budget's share of the width's), seed
    assert trial_key({"width": "m3", "fraction": 0.024}, 1, p) == "m3-d2.4-s100000-seed1"
    assert trial_key({"width": "m1", "budget": 0.25}, 0, p) == "m1-d100-s12500"
    assert trial_key({"width": "m3"}, 0, p) == "m3-d100-s100000"


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
    from fm4npp.study.driver import main

    assert main("model_scaling", ["--data", str(tmp_path / "nope"),
                                  "--storage", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------- analysis
@pytest.fixture
def mlflow_db(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))


def _fake_study(name, kind, rows, failed=()):
    """A parent run and FINISHED child runs laid out as fm4npp/study/ and
    fm4npp/pretrain/run.py write them.

    A row: width, N, D, C, L (the final val_mse) and optionally fraction, budget, seed,
    steps (default 100 x budget), baseline (val_baseline_mse, logged at every val pass; None:
    not logged, like older runs), curve (val_mse at fractions of training, [(frac, loss), ...],
    the last is L; default four passes L x frac^-0.3) and flops_at ("val": flops_C logged at
    each val pass, "final": only at the last step, so earlier C must be interpolated).
    """
    from fm4npp import runs

    from fm4npp.analysis.load import EXPERIMENT

    parent, _ = runs.get_or_start_run(name, tags={"study": name, "study.kind": kind,
                                                  "fm4npp.study_parent": "1"},
                                      experiment=EXPERIMENT)
    for r in rows:
        steps = r.get("steps", int(round(100 * r.get("budget", 1.0))))
        key = f"{r['width']}-d{100 * r.get('fraction', 1.0):g}-s{steps}"
        if r.get("seed", 0):
            key += f"-seed{r['seed']}"
        tags = {"study": name, "study.kind": kind, "trial_key": key, "axis.width": r["width"],
                "seed": str(r.get("seed", 0))}
        for ax in ("fraction", "budget"):
            if ax in r:
                tags[f"axis.{ax}"] = str(r[ax])
        rid = runs.start_run(f"train-{name}-{key}", tags=tags, parent_run_id=parent,
                             experiment=EXPERIMENT,
                             params={"steps": steps, "width": r["width"], "layers": 2,
                                     "seed": r.get("seed", 0),
                                     "data_fraction": r.get("fraction", 1.0)})
        curve = r.get("curve") or [(f, r["L"] * f**-0.3) for f in (0.25, 0.5, 0.75, 1.0)]
        history = []
        for frac, loss in curve:
            step = int(round(steps * frac))
            row = {"step": step, "val_mse": loss, "train_loss": loss * 1.1,
                   "params_N": r["N"], "spacepoints_D": r["D"] * frac}
            if r.get("flops_at", "val") == "val" or frac == 1.0:
                row["flops_C"] = r["C"] * frac
            if r.get("baseline") is not None:
                row["val_baseline_mse"] = r["baseline"]
            history.append(row)
        history[-1]["val_mse"] = r["L"]
        runs.log_metrics_history(rid, history)
        if r.get("baseline"):
            runs.log_metrics(rid, {"val_mse_over_baseline": r["L"] / r["baseline"]}, step=steps)
        runs.end_run(rid, "FAILED" if key in failed else "FINISHED")
    runs.end_run(parent)
    return parent


LAW = lambda n, d: 0.1 + 3.0 * (n / 1e4) ** -0.35 + 0.2 * (d / 1e6) ** -0.25  # noqa: E731
WIDTHS = [("w8", 4.5e3), ("w16", 1.1e4), ("w32", 3.5e4), ("w64", 1.2e5), ("m1", 3.7e5)]


def _model_rows(baseline, rng=None, d=2e6):
    """Model-scaling runs on LAW whose validation curves follow LAW(N, D consumed so far)."""
    rows = []
    for w, n in WIDTHS:
        noise = np.exp(rng.normal(0, 0.003)) if rng is not None else 1.0
        curve = [(f, LAW(n, d * f) * (1 + 0.8 * (1 - f)) * noise) for f in (0.1, 0.25, 0.5, 1.0)]
        rows.append(dict(width=w, N=n, D=d, C=6 * n * d, L=curve[-1][1], curve=curve,
                         baseline=baseline))
    return rows


def _data_rows(baseline):
    return [dict(width="w32", fraction=f, N=3.5e4, D=2e6 * f, C=6 * 3.5e4 * 2e6 * f,
                 L=LAW(3.5e4, 2e6 * f), baseline=baseline) for f in PAPER_FRACTIONS]


def test_figure5_from_mlflow_runs(tmp_path, mlflow_db):
    from fm4npp.analysis.figure5 import make_figure5
    from fm4npp.analysis.load import load_study

    rng = np.random.default_rng(0)
    model_rows, compute_rows = [], []
    for w, n in WIDTHS:
        d = 2e6
        model_rows.append(dict(width=w, N=n, D=d, C=6 * n * d, baseline=5.0,
                               L=LAW(n, d) * np.exp(rng.normal(0, 0.003))))
        for b in (0.25, 0.5, 1.0):
            compute_rows.append(dict(width=w, budget=b, N=n, D=d * b, C=6 * n * d * b,
                                     L=LAW(n, d * b), baseline=5.0))
    _fake_study("model_scaling-t", "model_scaling", model_rows)
    _fake_study("data_scaling-t", "data_scaling", _data_rows(baseline=None))  # older runs
    parent = _fake_study("compute_scaling-t", "compute_scaling",
                         compute_rows + [dict(width="w8", budget=0.1, N=4.5e3, D=1e5, C=1e9,
                                              L=0.01)],
                         failed={"w8-d100-s10"})
    got = load_study("compute_scaling-t")
    assert len(got) == len(compute_rows)  # FAILED run left out
    assert {t.baseline for t in got} == {5.0} and {t.steps for t in got} == {25, 50, 100}

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
    assert 3 <= len(frontier) < len(compute_rows)
    assert "chinchilla" in fits
    assert summary["studies"] == ["model_scaling-t", "data_scaling-t", "compute_scaling-t"]
    # with a compute-scaling study, (c) is one point per run (not the curves)
    fig5 = json.loads((out / "figure5.json").read_text())
    c = fig5["panels"]["c"]
    assert c["source"] == "runs" and "curves" not in c and len(c["points"]) == len(compute_rows)
    assert fig5["panels"]["b"]["baseline"] is None  # data runs logged none: kept, no line
    assert all(pt["used"] and pt["ratio"] is None for pt in fig5["panels"]["b"]["points"])

    from fm4npp import runs

    arts = [a.path for a in runs.client().list_artifacts(parent, "figure5")]
    assert {"figure5/figure5.png", "figure5/fits.json", "figure5/figure5.json"} <= set(arts)


def test_figure5_json_model_and_data_studies(tmp_path, mlflow_db):
    """Model + data scaling: all three panels, (c) from the validation curves; figure5.json."""
    from fm4npp.analysis.figure5 import main

    rng = np.random.default_rng(1)
    model_rows = _model_rows(baseline=6.0, rng=rng)
    model_rows[1]["flops_at"] = "final"  # flops_C only at the end: C interpolated in step
    _fake_study("model_scaling-j", "model_scaling", model_rows)
    parent = _fake_study("data_scaling-j", "data_scaling", _data_rows(baseline=6.0))
    out = tmp_path / "fig"
    assert main(["--study", "model_scaling-j", "--study", "data_scaling-j", "--out", str(out),
                 "--n-boot", "40"]) == 0
    for f in ("figure5.png", "figure5a.png", "figure5b.png", "figure5c.png"):
        assert (out / f).stat().st_size > 1000, f
    fig5 = json.loads((out / "figure5.json").read_text())
    assert set(fig5) >= {"baseline", "max_ratio", "studies", "panels"}
    assert fig5["baseline"] == pytest.approx(6.0) and fig5["max_ratio"] == 1.0
    assert fig5["studies"] == ["model_scaling-j", "data_scaling-j"]
    assert set(fig5["panels"]) == {"a", "b", "c"}
    xs = {"a": "N", "b": "D_set", "c": "C"}
    for p, panel in fig5["panels"].items():
        assert panel["x"] == xs[p] and isinstance(panel["note"], str)
        assert {"alpha", "ci", "A"} <= set(panel["fit"]), p
        lo, hi = panel["fit"]["ci"]
        assert lo <= panel["fit"]["alpha"] <= hi
        for pt in panel["points"]:
            assert {"x", "loss", "run_id", "key", "ratio", "used"} <= set(pt)
            assert pt["ratio"] == pytest.approx(pt["loss"] / 6.0)
            if pt["used"]:
                assert pt["ratio"] <= fig5["max_ratio"]
    assert len(fig5["panels"]["a"]["points"]) >= 4 and len(fig5["panels"]["b"]["points"]) >= 4
    a, b = fig5["panels"]["a"], fig5["panels"]["b"]
    assert a["fit"]["kind"] == "saturating" and "E" in a["fit"] and "fit_pure" in a
    assert a["fit"]["alpha"] == pytest.approx(0.35, rel=0.1)
    assert b["fit"]["alpha"] == pytest.approx(0.25, rel=0.1)
    assert a["note"] == "" and all(pt["used"] for pt in a["points"] + b["points"])
    c = fig5["panels"]["c"]
    assert c["source"] == "validation curves"
    assert set(c["curves"]) == {r["key"] for r in a["points"]}
    # the interpolated run's first point: C_final x step / steps
    w16 = next(k for k in c["curves"] if k.startswith("w16"))
    assert c["curves"][w16][0][0] == pytest.approx(model_rows[1]["C"] * 10 / 100)
    assert c["fit"]["n_points"] == len(c["points"]) >= 3
    fits = json.loads((out / "fits.json").read_text())
    assert "baseline" in fits["runs"][0] and "val_history" not in fits["runs"][0]

    from fm4npp import runs

    arts = [x.path for x in runs.client().list_artifacts(parent, "figure5")]
    assert "figure5/figure5.json" in arts and "figure5/figure5c.png" in arts


def test_figure5_frontier_is_lower_envelope_of_curves(tmp_path, mlflow_db):
    from fm4npp.analysis.figure5 import make_figure5

    rows = _model_rows(baseline=3.5)  # w8's early passes (and its end) lie above 3.5
    _fake_study("model_scaling-f", "model_scaling", rows)
    fig5 = make_figure5(["model_scaling-f"], tmp_path / "fig", n_boot=30, log=False)["figure5"]
    c = fig5["panels"]["c"]
    pts = c["points"]
    cs, ls = [p["x"] for p in pts], [p["loss"] for p in pts]
    assert len(pts) >= 3 and cs == sorted(cs)
    assert all(l1 >= l2 for l1, l2 in zip(ls, ls[1:]))  # non-increasing with compute
    # every frontier point is a point of its run's curve, and not always the final one
    for p in pts:
        assert [p["x"], p["loss"]] in c["curves"][p["key"]]
        assert p["used"] and p["ratio"] < 1
    assert len({p["key"] for p in pts}) >= 2
    assert any(p["step"] < 100 for p in pts)
    # a lower envelope: no curve point better than the baseline lies below the frontier
    # reached with at most its compute, and every one at least the first frontier point's C
    all_pts = [(x, l) for curve in c["curves"].values() for x, l in curve if l < 3.5]
    for x, l in all_pts:
        reached = [pl for pc, pl in zip(cs, ls) if pc <= x]
        assert reached and min(reached) <= l
    # points above the baseline are excluded from the frontier (and counted in the note)
    above = [(x, l) for curve in c["curves"].values() for x, l in curve if l >= 3.5]
    assert above and not any((p["x"], p["loss"]) in above for p in pts)
    assert f"{len(above)} of" in c["note"] and "omitted from the frontier" in c["note"]
    assert c["fit"]["n_points"] == len(pts)


def test_figure5_run_worse_than_baseline_is_not_fitted(tmp_path, mlflow_db, capsys):
    from fm4npp.analysis.figure5 import make_figure5

    rows = _model_rows(baseline=6.0)
    rows.append(dict(width="m2", N=1.2e6, D=2e6, C=6 * 1.2e6 * 2e6, L=7.0, baseline=6.0))
    _fake_study("model_scaling-w", "model_scaling", rows)
    summary = make_figure5(["model_scaling-w"], tmp_path / "fig", n_boot=30, log=False)
    a = summary["figure5"]["panels"]["a"]
    bad = [p for p in a["points"] if p["key"].startswith("m2")]
    assert len(bad) == 1 and bad[0]["used"] is False and bad[0]["ratio"] == pytest.approx(7 / 6)
    assert all(p["used"] for p in a["points"] if not p["key"].startswith("m2"))
    assert a["fit"]["n_points"] == len(rows) - 1 == summary["fits"]["a"]["fit"]["n_points"]
    assert a["fit"]["alpha"] == pytest.approx(0.35, rel=0.1)  # the outlier did not bend it
    assert "1 run not better than the constant predictor: omitted from the fit" in a["note"]
    assert "not better than the constant predictor" in capsys.readouterr().out
    # --max-ratio 1.2 lets it back in (as 7/6 < 1.2)
    summary = make_figure5(["model_scaling-w"], tmp_path / "fig2", n_boot=30, log=False,
                           max_ratio=1.2)
    a = summary["figure5"]["panels"]["a"]
    assert all(p["used"] for p in a["points"]) and a["fit"]["n_points"] == len(rows)


def test_figure5_refuses_thin_fits(tmp_path, mlflow_db, capsys):
    from fm4npp.analysis.figure5 import NoFitError, main, make_figure5

    # one panel thin, the other not: the thin one says so, the run goes on
    rows = _model_rows(baseline=6.0)[:2]
    _fake_study("model_scaling-two", "model_scaling", rows)
    fig5 = make_figure5(["model_scaling-two"], tmp_path / "two", n_boot=20, log=False)["figure5"]
    out = capsys.readouterr().out
    assert "panel (a) model size: only 2 usable points" in out and "no power-law fit" in out
    assert fig5["panels"]["a"]["fit"] is None
    assert "fewer than 3 usable points: no fit" in fig5["panels"]["a"]["note"]
    assert fig5["panels"]["c"]["fit"] is not None  # 2 runs x 4 val passes: a frontier

    # no panel with 3 usable points: figure and JSON still written, then a clear error
    rows = [dict(width=w, N=n, D=2e6, C=6 * n * 2e6, L=L, baseline=1.0, curve=[(1.0, L)])
            for (w, n), L in zip(WIDTHS[:3], (0.8, 1.2, 1.5))]
    _fake_study("model_scaling-bad", "model_scaling", rows)
    out_dir = tmp_path / "bad"
    with pytest.raises(SystemExit, match="no panel has >= 3 usable points") as exc:
        make_figure5(["model_scaling-bad"], out_dir, n_boot=20, log=False)
    msg = str(exc.value)
    assert "panel (a) model size: only 1 usable point " in msg
    assert "2 worse than the baseline" in msg
    assert "panel (c)" in msg
    assert (out_dir / "figure5.png").stat().st_size > 1000
    fig5 = json.loads((out_dir / "figure5.json").read_text())
    for p in ("a", "c"):
        assert fig5["panels"][p]["fit"] is None
        assert "fewer than 3 usable points: no fit" in fig5["panels"][p]["note"]
    assert "2 runs not better than the constant predictor" in fig5["panels"]["a"]["note"]
    # the CLI: exits non-zero with the message, unless told a smoke run needs no fit
    with pytest.raises(NoFitError):
        main(["--study", "model_scaling-bad", "--out", str(out_dir), "--no-log"])
    assert main(["--study", "model_scaling-bad", "--out", str(out_dir), "--no-log",
                 "--no-fit-ok"]) == 0
    assert "no panel has >= 3 usable points" in capsys.readouterr().err


@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("lo, hi, style", [
    (0.05, 0.08, "plain"), (0.061, 0.068, "plain"), (0.77, 1.55, "plain"), (2.2, 3.6, "plain"),
    (0.02, 0.3, "plain"), (3.7e3, 4e4, "sci"), (4.3e10, 4.4e11, "sci"), (1.5e4, 3e6, "sci"),
    (1e3, 1e7, "decades")])
def test_figure5_log_axes_label_at_least_three_ticks(lo, hi, style, axis):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fm4npp.analysis.log_axes import readable_log_axis

    fig, ax = plt.subplots(figsize=(4.8, 4.0))  # one panel's size
    ax.plot([lo, hi], [lo, hi])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    which = ax.xaxis if axis == "x" else ax.yaxis
    ticks = readable_log_axis(which, lo, hi)
    fig.canvas.draw()
    locs = list(which.get_majorticklocs())
    labels = which.get_major_formatter().format_ticks(locs)
    shown = [(v, t) for v, t in zip(locs, labels) if lo * 0.999 <= v <= hi * 1.001]
    assert len(shown) >= 3 and all(t for _, t in shown), shown
    assert sorted(v for v, _ in shown) == pytest.approx(sorted(ticks))
    for v, t in shown:
        if style == "plain":
            assert float(t) == pytest.approx(v, rel=1e-2), shown
        elif style == "sci":
            assert "times10^" in t or t.startswith("$10^"), shown
        else:  # spans decades: matplotlib's own 10^k labels
            assert "10^" in t, shown
    # the drawn labels do not overlap one another
    boxes = sorted((lab.get_window_extent() for lab in which.get_ticklabels()
                    if lab.get_visible() and lab.get_text()), key=lambda b: (b.x0, b.y0))
    for b1, b2 in zip(boxes, boxes[1:]):
        assert not b1.overlaps(b2), (shown, b1, b2)
    plt.close(fig)


def test_objective_axis_multiplies_the_grid_and_names_the_trials():
    from fm4npp.study.presets import with_objectives

    p = PRESETS["smoke"]
    pts = with_objectives(grid_points("model_scaling", p), ("knn", "masked"))
    assert len(pts) == 2 * len(p.widths)
    keys = {trial_key(pt, 0, p) for pt in pts}
    assert "w32-d100-s200-masked" in keys and len(keys) == len(pts)
    assert trial_overrides({"width": "w32", "objective": "masked"}, 0, p)["objective"] == "masked"
    assert "objective" not in trial_overrides({"width": "w32"}, 0, p)  # the config's own
    assert with_objectives(pts[:1], ()) == pts[:1]
