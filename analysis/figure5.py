"""Figure 5 of the paper from the MLflow runs of the scaling studies.

    python analysis/figure5.py --study model_scaling-cpu --out figures/cpu
    python analysis/figure5.py --study model_scaling-smoke --study data_scaling-smoke --out DIR
    python analysis/figure5.py --preset cpu --out figures/cpu     # all three <kind>-cpu studies

(a) validation MSE vs parameters N, (b) vs the spacepoints in the training set D (the data
fraction's share, after the point cap), (c) vs training FLOPs C with the compute-optimal
frontier (C_min: the lowest loss reached with at most that compute). Model scaling gives (a)
and (c), data scaling (b), compute scaling (c) and, from its full-budget runs, (a). Without a
compute-scaling study, (c) is drawn as in the paper: every model-scaling run's validation
curve against its cumulative FLOPs, and the frontier is the lower envelope of all those
(C, loss) points; a compute-scaling study gives one point per run instead.

Science checks before any fit:
- every panel draws the constant predictor (each neighbour predicted at the point's own
  coordinates; `val_baseline_mse`, median over the panel's runs) as a horizontal line;
- a run (or, in (c) from curves, a validation pass) whose loss is not below
  --max-ratio x that baseline is no scaling point: drawn as a grey x, never fitted, and the
  panel says how many (runs that logged no baseline, older ones, are kept);
- a panel with fewer than 3 usable points (distinct x) gets no fit, and says so; when no
  panel has 3, the figure is still written and then the script exits with the reason.

Fits: each panel's pure power law L = A x^-alpha and, from 5 points up, the saturating
L = E + A x^-alpha, with bootstrap 90 % intervals on the exponents in the legend; (c) fits
the pure law to the frontier. Writes figure5.png/.pdf (all panels), figure5{a,b,c}.png/.pdf,
fits.json (every fit, every run) and figure5.json (per panel: the points with loss/baseline
and whether fitted, the fit, the note; for (c) from curves the frontier points and the
curves) to --out, and logs them as artifacts (under figure5/) of every study's parent run.
Also fits L(N, D) (Chinchilla approach 3) when both N and D vary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import powerlaw  # noqa: E402
from analysis.load import TrialRun, load_study, parent_run  # noqa: E402

KINDS = ("model_scaling", "data_scaling", "compute_scaling")
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


def _median_baseline(pts: list[TrialRun]) -> float | None:
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
                 "used": used, "baseline": _median_baseline(pts), "max_ratio": max_ratio,
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


# ------------------------------------------------------------------------------- drawing
def _width_colors(pts: list[TrialRun]):
    import matplotlib.pyplot as plt

    widths = sorted({t.width for t in pts}, key=lambda w: min(t.N for t in pts if t.width == w))
    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}


def _plain(v: float) -> str:
    """3 significant digits, never in e-notation: 5000, 2.5, 0.061."""
    return np.format_float_positional(float(f"{v:.3g}"), trim="-")


def _sci(v: float) -> str:
    """10^k, or m x 10^k."""
    exp = math.floor(math.log10(v) + 1e-9)
    mant = float(f"{v / 10**exp:.3g}")
    if abs(mant - 1) < 1e-6:
        return f"$10^{{{exp}}}$"
    return f"${_plain(mant)}\\times10^{{{exp}}}$"


def tick_labels(ticks) -> list[str]:
    """One style per axis: plain numbers when every tick is in [1e-3, 1e4), else m x 10^k."""
    ticks = [float(t) for t in ticks if t > 0]
    plain = all(1e-3 <= t < 1e4 for t in ticks)
    return [_plain(t) if plain else _sci(t) for t in ticks]


def _ticks_inside(lo: float, hi: float, subs) -> list[float]:
    e0, e1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    return [m * 10.0**e for e in range(e0, e1 + 1) for m in subs
            if lo * (1 - 1e-9) <= m * 10.0**e <= hi * (1 + 1e-9)]


def _min_gap(ticks: list[float], lo: float, hi: float) -> float:
    """The closest two ticks, as a fraction of the (log) axis length."""
    t = np.log(np.sort(ticks))
    return float(np.diff(t).min() / np.log(hi / lo)) if len(t) > 1 else 1.0


def readable_log_axis(axis, lo: float, hi: float) -> list[float]:
    """Label at least 3 ticks on a log axis spanning (lo, hi) and return their positions.

    With 3 or more powers of ten inside: matplotlib's 10^k labels, unchanged. Otherwise (a
    loss axis, usually, spans less than a decade and matplotlib would label nothing) the first
    of these that puts 3 ticks inside, spaced so their labels do not collide: the mantissas
    1, 3 or 1, 2, 5 of each decade, then round linear steps (0.05, 0.06, 0.07; 1, 1.5, 2).
    Labels are plain numbers (3 significant digits) or, beyond [1e-3, 1e4), m x 10^k. Minor
    ticks stay at 1..9 x 10^k, unlabelled (grid lines)."""
    from matplotlib.ticker import (FixedFormatter, FixedLocator, LogLocator, MaxNLocator,
                                   NullFormatter)

    lo, hi = min(lo, hi), max(lo, hi)
    axis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
    if len(_ticks_inside(lo, hi, (1.0,))) >= 3:
        return _ticks_inside(lo, hi, (1.0,))
    horizontal = getattr(axis, "axis_name", "y") == "x"
    candidates = [_ticks_inside(lo, hi, subs) for subs in ((1.0, 3.0), (1.0, 2.0, 5.0))]
    # y labels stack (more ticks fit); x labels sit side by side (fewer, wider apart)
    for nbins in ((3, 4, 5) if horizontal else (5, 4, 6, 3, 8)):
        values = MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        candidates.append([float(v) for v in values
                           if v > 0 and lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)])
    candidates = [c for c in candidates if len(c) >= 3] or [max(candidates, key=len)]

    def room(ticks):  # the gap a tick's label needs, as a fraction of the axis
        if not horizontal:
            return 0.06
        return 0.12 if tick_labels(ticks)[0][0] != "$" else 0.17

    fits = [c for c in candidates if _min_gap(c, lo, hi) >= room(c)]
    ticks = fits[0] if fits else max(candidates, key=lambda c: _min_gap(c, lo, hi))
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FixedFormatter(tick_labels(ticks)))
    axis.set_minor_locator(LogLocator(base=10.0, subs="all", numticks=100))
    return ticks


def _fit_grid(x: np.ndarray) -> np.ndarray:
    return np.geomspace(x.min() / 1.3, x.max() * 1.3, 200)


def draw_panel(ax, P: dict) -> None:
    """Draw one panel built by build_panel."""
    p, pts = P["panel"], P["pts"]
    var, xlabel, title = PANELS[p]
    colors = _width_colors(pts)
    label = WORSE_LABEL if P["max_ratio"] == 1.0 else f"above {P['max_ratio']:g} x baseline (not fitted)"
    worse_kw = dict(marker="x", color="0.55", s=26, linewidths=1.2, zorder=5, label=label)
    if P["from_curves"]:
        # one validation curve per run, coloured by model width (a width's seeds share it)
        seen = set()
        for i, t in enumerate(pts):
            sel = np.flatnonzero(P["curve_run"] == i)
            sel = sel[np.argsort(P["curve_step"][sel])]
            ax.plot(P["curve_c"][sel], P["curve_y"][sel], "-o", ms=2.5, lw=1.1, alpha=0.85,
                    color=colors[t.width], label=t.width if t.width not in seen else "_nolegend_")
            seen.add(t.width)
        bad = ~P["curve_used"]
        if bad.any():
            ax.scatter(P["curve_c"][bad], P["curve_y"][bad], **worse_kw)
        fx, fy = P["curve_c"], P["curve_y"]
        xall = P["curve_c"]
    else:
        xs, ys, used = P["xs"], P["ys"], P["used"]
        # one marker per run, coloured by model width; seeds of a cell show as a vertical spread
        for w, col in colors.items():
            sel = [i for i, t in enumerate(pts) if t.width == w and used[i]]
            if sel:
                ax.scatter(xs[sel], ys[sel], color=col, s=28, zorder=3, label=w,
                           edgecolors="k", linewidths=0.4)
        if (~used).any():
            ax.scatter(xs[~used], ys[~used], **worse_kw)
        fx, fy = xs, ys
        xall = xs
        if p != "c":
            name = {"N": "N", "D_set": "D"}[var]
            grid = _fit_grid(xs[used])
            if "fit" in P:
                ax.plot(grid, P["fit"].predict(grid), "k--", lw=1.2, label=P["fit"].label(name))
            if "fit_sat" in P:
                ax.plot(grid, P["fit_sat"].predict(grid), ":", color="0.35", lw=1.4,
                        label=P["fit_sat"].label(name))
    if p == "c":
        idx = P.get("frontier_idx", np.array([], int))
        if len(idx):
            xf, yf = fx[idx], fy[idx]
            ax.step(np.r_[xf, xall.max()], np.r_[yf, yf[-1]], where="post", color="tab:red",
                    lw=1.0, alpha=0.7, label="$C_{\\min}$ frontier")
            ax.scatter(xf, yf, s=60, facecolors="none", edgecolors="tab:red", zorder=4)
            if "frontier_fit" in P:
                grid = _fit_grid(xf)
                ax.plot(grid, P["frontier_fit"].predict(grid), "r--", lw=1.2,
                        label="frontier " + P["frontier_fit"].label("C"))
    if P["baseline"]:
        ax.axhline(P["baseline"], color="0.25", ls="-.", lw=1.0,
                   label=f"{BASELINE_LABEL} ({P['baseline']:.3g})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.autoscale_view()
    for axis, (lo, hi), setter in ((ax.xaxis, ax.get_xlim(), ax.set_xlim),
                                   (ax.yaxis, ax.get_ylim(), ax.set_ylim)):
        setter(lo, hi)  # freeze the range the ticks are chosen for
        readable_log_axis(axis, lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation MSE")
    # the notes sit between the title and the axes, the legend below the x label: neither
    # can hide a point
    ax.set_title(f"({p}) {title}" + (": validation curves" if P["from_curves"] else ""),
                 pad=6 + 9 * len(P["notes"]))
    if P["notes"]:
        ax.text(0.0, 1.015, "\n".join(P["notes"]), transform=ax.transAxes, ha="left",
                va="bottom", fontsize=6.5, color="tab:red" if P["thin"] else "0.25")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2,
              frameon=False, handlelength=2.2, columnspacing=1.2)


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


def _figure5_json(panels: dict, studies: list[str], baseline, max_ratio: float) -> dict:
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


def _fits_json(panels: dict, chinchilla) -> dict:
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


# ---------------------------------------------------------------------------------- main
def make_figure5(studies: list[str], out_dir: Path, n_boot: int = 200, log: bool = True,
                 max_ratio: float = 1.0) -> dict:
    """Draw and save Figure 5 for the given studies; returns the summary (also in fits.json)
    with the figure's data under "figure5" (also in figure5.json). Raises SystemExit, after
    writing (and logging) everything, when no panel has MIN_POINTS_FIT usable points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fm4npp import runs

    trials: list[TrialRun] = []
    found = []
    for s in studies:
        got = load_study(s, histories=True)
        print(f"[figure5] study {s}: {len(got)} finished trials")
        if got:
            found.append(s)
        trials += got
    if not trials:
        raise SystemExit(f"no finished trials for {studies} in {runs.tracking_uri()}")
    curves = curves_for_c(trials)
    panels = {p: build_panel(p, pts, max_ratio, n_boot, from_curves=(p == "c" and curves))
              for p, pts in panel_points(trials).items()}
    chin = None
    good = [t for t in trials if t.better_than_baseline(max_ratio)]
    # L(N, D) needs N and D both varied: D is the training set (a data-scaling run's
    # fraction), not the spacepoints consumed, which a fixed step budget keeps equal
    ns, ds = {t.N for t in good}, {t.D_set or t.D for t in good}

    def spread(v):
        return len(v) >= 3 and max(v) >= 2 * min(v)

    if spread(ns) and spread(ds) and len(good) >= 6:
        try:
            chin = powerlaw.fit_chinchilla([t.N for t in good], [t.D_set or t.D for t in good],
                                           [t.val_mse for t in good])
        except ValueError as exc:
            print(f"[figure5] no L(N, D) fit: {exc}")
        if chin is not None and not all(0.0 < e < 5.0 - 1e-6 for e in (chin.alpha, chin.beta)):
            print(f"[figure5] no L(N, D) fit: an exponent ran to its bound (alpha "
                  f"{chin.alpha:.3g}, beta {chin.beta:.3g}); these runs do not constrain it")
            chin = None
    else:
        print("[figure5] no L(N, D) fit: needs >= 3 values of both N and training-set D, "
              "each spanning >= 2x")

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 5.4), squeeze=False)
    for ax, p in zip(axes[0], sorted(panels)):
        draw_panel(ax, panels[p])
    fig.suptitle("FM4NPP neural scaling: " + ", ".join(found), fontsize=9)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out_dir / f"figure5.{ext}", dpi=150)
        written.append(out_dir / f"figure5.{ext}")
    plt.close(fig)
    for p in sorted(panels):
        fig, ax = plt.subplots(figsize=(5.2, 5.4))
        draw_panel(ax, panels[p])
        fig.tight_layout()
        for ext in ("png", "pdf"):
            fig.savefig(out_dir / f"figure5{p}.{ext}", dpi=150)
            written.append(out_dir / f"figure5{p}.{ext}")
        plt.close(fig)
    fig5 = _figure5_json(panels, found, _median_baseline(trials), max_ratio)
    (out_dir / "figure5.json").write_text(json.dumps(fig5, indent=1))
    written.append(out_dir / "figure5.json")
    summary = {"studies": found, "tracking_uri": runs.tracking_uri(), "max_ratio": max_ratio,
               "runs": [t.summary() for t in trials], "fits": _fits_json(panels, chin)}
    (out_dir / "fits.json").write_text(json.dumps(summary, indent=1))
    written.append(out_dir / "fits.json")

    for p, f in sorted(panels.items()):
        if f["thin"]:
            print(f"[figure5] {thin_message(f)}")
        elif f["n_worse"]:
            print(f"[figure5] panel ({p}): {f['notes'][0]}")
        for k in ("fit", "fit_sat", "frontier_fit"):
            if k in f:
                var = {"D_set": "D"}.get(f["x"], f["x"]) if k != "frontier_fit" else "C"
                print(f"[figure5] ({p}) {k}: {f[k].label(var)}")
    if chin is not None:
        print(f"[figure5] L(N, D) = {chin.E:.3g} + {chin.A:.3g}/N^{chin.alpha:.3f} + "
              f"{chin.B:.3g}/D^{chin.beta:.3f}")
    if log:
        client = runs.client()
        for s in found:
            parent = parent_run(s)
            if parent is None:
                continue
            for path in written:
                client.log_artifact(parent.info.run_id, str(path), artifact_path="figure5")
            for p, f in panels.items():
                if "fit" in f:
                    var = {"D_set": "D"}.get(f["x"], f["x"])
                    client.log_metric(parent.info.run_id, f"alpha_{var}", f["fit"].alpha)
                if "frontier_fit" in f:
                    client.log_metric(parent.info.run_id, "alpha_C_frontier",
                                      f["frontier_fit"].alpha)
    for path in written:
        print(f"[figure5] wrote {path}")
    summary["figure5"] = fig5
    if all(f["thin"] for f in panels.values()):
        raise NoFitError(
            f"[figure5] no scaling law to fit: no panel has >= {MIN_POINTS_FIT} usable points ("
            + "; ".join(thin_message(f) for _, f in sorted(panels.items()))
            + f"). The figure in {out_dir} shows the runs against the constant predictor; "
            f"train longer or on more data until runs beat it, or add grid points.")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", action="append", default=[],
                    help="study name, e.g. model_scaling-cpu (repeatable)")
    ap.add_argument("--preset", default="",
                    help="shortcut: the three studies <kind>-<preset> (those that exist)")
    ap.add_argument("--out", required=True, help="output directory for PNG/PDF/JSON")
    ap.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples per fit")
    ap.add_argument("--max-ratio", type=float, default=1.0,
                    help="a run is a scaling point only if its val MSE is below this times "
                         "the constant predictor's (default 1.0)")
    ap.add_argument("--no-log", action="store_true", help="do not log to the parent runs")
    ap.add_argument("--no-fit-ok", action="store_true",
                    help="exit 0 even when no panel has enough points for a fit (the reason is "
                         "still printed): for smoke runs that only check the plumbing")
    args = ap.parse_args(argv)
    studies = list(args.study) + [f"{k}-{args.preset}" for k in KINDS if args.preset]
    if not studies:
        ap.error("give --study NAME or --preset NAME")
    if not args.max_ratio > 0:
        ap.error("--max-ratio must be positive")
    try:
        make_figure5(studies, Path(args.out), n_boot=args.n_boot, log=not args.no_log,
                     max_ratio=args.max_ratio)
    except NoFitError as exc:
        if not args.no_fit_ok:
            raise
        print(exc, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
