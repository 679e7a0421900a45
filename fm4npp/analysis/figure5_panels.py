"""Figure 5's panels as data: which runs go where, which are scaling points, the fits, and the
JSON files written beside the figure (no drawing here; fm4npp.analysis.figure5 draws them)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from fm4npp.analysis import powerlaw
from fm4npp.analysis.load import TrialRun

# fewer distinct x than this and a power law's exponent is not a measurement (two points
# always lie on some power law): no fit at all
MIN_POINTS_FIT = 3
# L = E + A x^-alpha has three parameters: with fewer distinct x than this its exponent is
# not constrained (the bootstrap interval spans everything), so only the pure law is drawn
MIN_POINTS_SATURATING = 5
PANELS = {
    "a": ("N", "parameters $N$", "model size"),
    "b": ("D_set", "training-set spacepoints $D$", "data"),
    "c": ("C", "training FLOPs $C$", "compute"),
}
WORSE_LABEL = "worse than baseline (not fitted)"
BASELINE_LABEL = "constant predictor"
THIN_NOTE = f"fewer than {MIN_POINTS_FIT} usable points: no fit"


def panel_points(trials: list[TrialRun]) -> dict[str, list[TrialRun]]:
    """Which runs go into which panel (see the module docstring)."""
    by_kind = defaultdict(list)
    for t in trials:
        by_kind[t.kind].append(t)
    out = {}
    if by_kind["model_scaling"]:
        out["a"] = by_kind["model_scaling"]
    elif by_kind["compute_scaling"]:
        out["a"] = [t for t in by_kind["compute_scaling"] if t.budget == 1.0]
    if by_kind["data_scaling"]:
        # runs logged without a training-set size fall back to the spacepoints they consumed
        out["b"] = [t if t.D_set > 0 else dataclasses.replace(t, D_set=t.D)
                    for t in by_kind["data_scaling"]]
    if by_kind["compute_scaling"]:
        out["c"] = by_kind["compute_scaling"]
    elif by_kind["model_scaling"]:
        out["c"] = by_kind["model_scaling"]
    return {k: v for k, v in out.items() if v}


def curves_for_c(trials: list[TrialRun]) -> bool:
    """Panel (c) from the validation curves: model-scaling runs and no compute-scaling study."""
    kinds = {t.kind for t in trials}
    return "compute_scaling" not in kinds and "model_scaling" in kinds


def median_baseline(pts: list[TrialRun]) -> float | None:
    b = [t.baseline for t in pts if t.baseline > 0]
    return float(np.median(b)) if b else None


def _bar(max_ratio: float) -> str:
    """What a point must beat to be a scaling point, in words."""
    return "the constant predictor" if max_ratio == 1.0 else f"{max_ratio:g} x the constant predictor"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def build_panel(panel: str, pts: list[TrialRun], max_ratio: float = 1.0, n_boot: int = 200,
                from_curves: bool = False) -> dict:
    """One panel's points, which of them are scaling points, and its fits.

    Keys: x (the variable), pts, xs/ys/used (one per run), baseline, usable (distinct x the
    fit can use: of the runs better than the baseline, for (c) of the frontier), notes, and
    the fits that were possible: fit (pure), fit_sat, and for (c) frontier_idx/frontier_fit.
    From curves, curve_run/curve_step/curve_c/curve_y/curve_used hold every validation pass
    and frontier_idx indexes them."""
    var = PANELS[panel][0]
    xs = np.array([getattr(t, var) for t in pts], float)
    ys = np.array([t.val_mse for t in pts], float)
    used = np.array([t.better_than_baseline(max_ratio) for t in pts], bool)
    out: dict = {"panel": panel, "x": var, "pts": pts, "n_runs": len(pts), "xs": xs, "ys": ys,
                 "used": used, "baseline": median_baseline(pts), "max_ratio": max_ratio,
                 "from_curves": from_curves, "notes": []}
    n_worse = int((~used).sum())
    out["n_worse"] = n_worse
    if from_curves:
        rows = [(i, step, c, loss, t.baseline <= 0 or loss < max_ratio * t.baseline)
                for i, t in enumerate(pts) for step, c, loss in t.curve()]
        run_i, step, c, y, ok = (np.array(col) for col in zip(*rows))
        out.update(curve_run=run_i.astype(int), curve_step=step.astype(int),
                   curve_c=c.astype(float), curve_y=y.astype(float), curve_used=ok.astype(bool))
        n_bad = int((~out["curve_used"]).sum())
        out["n_worse_points"] = n_bad
        if n_bad:
            out["notes"].append(f"{n_bad} of {len(rows)} validation points not better than "
                                f"{_bar(max_ratio)}: omitted from the frontier")
        good = np.flatnonzero(out["curve_used"])
        fidx = (good[powerlaw.frontier(out["curve_c"][good], out["curve_y"][good])]
                if good.size else np.array([], int))
        out["frontier_idx"] = fidx
        out["usable"] = int(np.unique(out["curve_c"][fidx]).size)
        if out["usable"] >= MIN_POINTS_FIT:
            out["frontier_fit"] = powerlaw.fit_with_ci(out["curve_c"][fidx], out["curve_y"][fidx],
                                                       kind="pure", n_boot=n_boot)
    else:
        if n_worse:
            out["notes"].append(f"{_plural(n_worse, 'run')} not better than {_bar(max_ratio)}: "
                                f"omitted from the fit")
        ux, uy = xs[used], ys[used]
        out["usable"] = int(np.unique(ux).size)
        if out["usable"] >= MIN_POINTS_FIT:
            out["fit"] = powerlaw.fit_with_ci(ux, uy, kind="pure", n_boot=n_boot)
        if out["usable"] >= MIN_POINTS_SATURATING:
            out["fit_sat"] = powerlaw.fit_with_ci(ux, uy, kind="saturating", n_boot=n_boot)
        if panel == "c":
            good = np.flatnonzero(used)
            fidx = good[powerlaw.frontier(ux, uy)] if good.size else np.array([], int)
            out["frontier_idx"] = fidx
            out["usable"] = int(np.unique(xs[fidx]).size)
            if out["usable"] >= MIN_POINTS_FIT:
                out["frontier_fit"] = powerlaw.fit_with_ci(xs[fidx], ys[fidx], kind="pure",
                                                           n_boot=n_boot)
    out["thin"] = out["usable"] < MIN_POINTS_FIT
    if out["thin"]:
        out["notes"].append(THIN_NOTE)
    return out



# ---------------------------------------------------------------------------------- JSON
def _fit_json(fit) -> dict | None:
    if fit is None:
        return None
    d = {"kind": fit.kind, "alpha": fit.alpha, "ci": list(fit.ci["alpha"]) if "alpha" in
         fit.ci else None, "A": fit.A, "n_points": fit.n_points, "rel_rmse": fit.rel_rmse}
    if fit.kind == "saturating":
        d["E"] = fit.E
        if "E" in fit.ci:
            d["E_ci"] = list(fit.ci["E"])
    return d


def _ratio(loss: float, t: TrialRun) -> float | None:
    return float(loss / t.baseline) if t.baseline > 0 else None


def figure5_json(panels: dict, studies: list[str], baseline, max_ratio: float) -> dict:
    """figure5.json: per panel its points (x, loss, run, loss/baseline, fitted or not), the fit
    ((a), (b): the saturating law where there are points enough, else the pure one, which is
    then also under fit_pure; (c): the pure law on the frontier; null when too few points)
    and the note printed on it. For (c) from curves, the points are the frontier's and
    "curves" holds every run's [C, loss] pairs."""
    out = {"baseline": baseline, "max_ratio": max_ratio, "studies": studies, "panels": {}}
    for p, P in sorted(panels.items()):
        pts = P["pts"]
        d: dict = {"x": P["x"], "n_runs": P["n_runs"], "usable": P["usable"],
                   "baseline": P["baseline"], "note": "; ".join(P["notes"])}
        if P["from_curves"]:
            d["source"] = "validation curves"
            d["points"] = [
                {"x": float(P["curve_c"][i]), "loss": float(P["curve_y"][i]),
                 "run_id": pts[P["curve_run"][i]].run_id, "key": pts[P["curve_run"][i]].key,
                 "step": int(P["curve_step"][i]),
                 "ratio": _ratio(P["curve_y"][i], pts[P["curve_run"][i]]), "used": True}
                for i in P["frontier_idx"]]
            d["curves"] = {}
            for i, t in enumerate(pts):
                sel = np.flatnonzero(P["curve_run"] == i)
                sel = sel[np.argsort(P["curve_step"][sel])]
                d["curves"][t.key] = [[float(P["curve_c"][j]), float(P["curve_y"][j])]
                                      for j in sel]
            d["n_worse_points"] = P["n_worse_points"]
        else:
            d["source"] = "runs"
            d["points"] = [{"x": float(P["xs"][i]), "loss": float(t.val_mse),
                            "run_id": t.run_id, "key": t.key,
                            "ratio": _ratio(t.val_mse, t), "used": bool(P["used"][i])}
                           for i, t in enumerate(pts)]
            if p == "c":
                d["frontier"] = [pts[i].key for i in P["frontier_idx"]]
        d["n_worse"] = P["n_worse"]
        if p == "c":
            d["fit"] = _fit_json(P.get("frontier_fit"))
        else:
            # the saturating law where there are points enough for it, else the pure one
            d["fit"] = _fit_json(P.get("fit_sat") or P.get("fit"))
            if "fit_sat" in P:
                d["fit_pure"] = _fit_json(P["fit"])
        out["panels"][p] = d
    return out


def fits_json(panels: dict, chinchilla) -> dict:
    out = {}
    for p, f in panels.items():
        d = {"n_runs": f["n_runs"], "x": f["x"], "usable": f["usable"], "n_worse": f["n_worse"]}
        for k in ("fit", "fit_sat", "frontier_fit"):
            if k in f:
                d[k] = f[k].as_dict()
        if "frontier_idx" in f:
            if f["from_curves"]:
                d["frontier_points"] = [[f["pts"][f["curve_run"][i]].key, int(f["curve_step"][i])]
                                        for i in f["frontier_idx"]]
            else:
                d["frontier_runs"] = [int(i) for i in f["frontier_idx"]]
        out[p] = d
    if chinchilla is not None:
        out["chinchilla"] = chinchilla.as_dict()
    return out


class NoFitError(SystemExit):
    """No panel of Figure 5 has enough usable points for a fit (raised after writing it)."""


def thin_message(P: dict) -> str:
    p = P["panel"]
    what = ("distinct C on the frontier of validation points better than the constant predictor"
            if P["from_curves"] else
            "distinct C on the frontier of runs better than the constant predictor" if p == "c"
            else f"distinct {PANELS[p][0]} among runs better than the constant predictor")
    return (f"panel ({p}) {PANELS[p][2]}: only {_plural(P['usable'], 'usable point')} "
            f"({what}; {P['n_runs']} runs, {P['n_worse']} worse than the baseline): no power-law "
            f"fit, it needs >= {MIN_POINTS_FIT}")
