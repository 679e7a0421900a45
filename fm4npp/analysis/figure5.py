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
import json
import sys
from pathlib import Path

import numpy as np

from fm4npp.analysis import powerlaw
from fm4npp.analysis.figure5_panels import (BASELINE_LABEL, MIN_POINTS_FIT, PANELS,
                                            WORSE_LABEL, NoFitError, figure5_json, fits_json,
                                            median_baseline, build_panel, curves_for_c,
                                            panel_points, thin_message)
from fm4npp.analysis.load import TrialRun, load_study, parent_run
from fm4npp.analysis.log_axes import readable_log_axis
from fm4npp.study.presets import KINDS  # plain data: no Ray imported

__all__ = ["NoFitError", "build_panel", "draw_panel", "main", "make_figure5", "panel_points",
           "readable_log_axis"]


# ------------------------------------------------------------------------------- drawing
def _width_colors(pts: list[TrialRun]):
    import matplotlib.pyplot as plt

    widths = sorted({t.width for t in pts}, key=lambda w: min(t.N for t in pts if t.width == w))
    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}


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
    fig5 = figure5_json(panels, found, median_baseline(trials), max_ratio)
    (out_dir / "figure5.json").write_text(json.dumps(fig5, indent=1))
    written.append(out_dir / "figure5.json")
    summary = {"studies": found, "tracking_uri": runs.tracking_uri(), "max_ratio": max_ratio,
               "runs": [t.summary() for t in trials], "fits": fits_json(panels, chin)}
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


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
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
