"""Figure 5 of the paper from the MLflow runs of the scaling studies.

    python analysis/figure5.py --study model_scaling-cpu --out figures/cpu
    python analysis/figure5.py --preset cpu --out figures/cpu     # all three <kind>-cpu studies

(a) validation MSE vs parameters N, (b) vs the spacepoints in the training set D (the data
fraction's share, after the point cap), (c) vs training FLOPs C with
the compute-optimal frontier (C_min: the lowest loss reached with at most that compute).
Log-log axes; each panel's pure power law L = A x^-alpha and, from 5 points up, the
saturating L = E + A x^-alpha, with bootstrap 90 % intervals on the exponents in the legend.
Draws whatever panels the given studies support: model scaling gives (a) and (c), data
scaling (b), compute scaling (c) and, from its full-budget runs, (a). Writes figure5.png/.pdf
(all panels), figure5{a,b,c}.png/.pdf and fits.json to --out, and logs them as artifacts of
every study's parent run. Also fits L(N, D) (Chinchilla approach 3) when both N and D vary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import powerlaw  # noqa: E402
from analysis.load import TrialRun, load_study, parent_run  # noqa: E402

KINDS = ("model_scaling", "data_scaling", "compute_scaling")
# L = E + A x^-alpha has three parameters: with fewer distinct x than this its exponent is
# not constrained (the bootstrap interval spans everything), so only the pure law is drawn
MIN_POINTS_SATURATING = 5
PANELS = {
    "a": ("N", "parameters $N$", "model size"),
    "b": ("D_set", "training-set spacepoints $D$", "data"),
    "c": ("C", "training FLOPs $C$", "compute"),
}


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


def fit_panel(panel: str, pts: list[TrialRun], n_boot: int) -> dict:
    """Fits of one panel: the power law in x, and for (c) the frontier and its power law."""
    var = PANELS[panel][0]
    x = np.array([getattr(t, var) for t in pts])
    y = np.array([t.val_mse for t in pts])
    out: dict = {"n_runs": len(pts), "x": var}
    if np.unique(x).size >= 2:
        out["fit"] = powerlaw.fit_with_ci(x, y, kind="pure", n_boot=n_boot)
    if np.unique(x).size >= MIN_POINTS_SATURATING:
        out["fit_sat"] = powerlaw.fit_with_ci(x, y, kind="saturating", n_boot=n_boot)
    if panel == "c":
        idx, ffit = powerlaw.fit_frontier(x, y, n_boot=n_boot)
        out["frontier_idx"] = idx
        if ffit is not None:
            out["frontier_fit"] = ffit
    return out


def _width_colors(pts: list[TrialRun]):
    import matplotlib.pyplot as plt

    widths = sorted({t.width for t in pts}, key=lambda w: min(t.N for t in pts if t.width == w))
    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}


def draw_panel(ax, panel: str, pts: list[TrialRun], fits: dict) -> None:
    from matplotlib.ticker import NullFormatter

    var, xlabel, title = PANELS[panel]
    x = np.array([getattr(t, var) for t in pts])
    y = np.array([t.val_mse for t in pts])
    colors = _width_colors(pts)
    # one marker per run, coloured by model width; seeds of a cell show as a vertical spread
    for w, col in colors.items():
        sel = [i for i, t in enumerate(pts) if t.width == w]
        ax.scatter(x[sel], y[sel], color=col, s=28, zorder=3, label=w,
                   edgecolors="k", linewidths=0.4)
    grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 200)
    if panel != "c":
        name = {"N": "N", "D_set": "D"}[var]
        if "fit" in fits:
            ax.plot(grid, fits["fit"].predict(grid), "k--", lw=1.2, label=fits["fit"].label(name))
        if "fit_sat" in fits:
            ax.plot(grid, fits["fit_sat"].predict(grid), ":", color="0.35", lw=1.4,
                    label=fits["fit_sat"].label(name))
    if panel == "c":
        idx = fits.get("frontier_idx", np.array([], int))
        if len(idx):
            xf, yf = x[idx], y[idx]
            ax.step(np.r_[xf, x.max()], np.r_[yf, yf[-1]], where="post", color="tab:red",
                    lw=1.0, alpha=0.7, label="$C_{\\min}$ frontier")
            ax.scatter(xf, yf, s=70, facecolors="none", edgecolors="tab:red", zorder=4)
        if "frontier_fit" in fits:
            ax.plot(grid, fits["frontier_fit"].predict(grid), "r--", lw=1.2,
                    label=fits["frontier_fit"].label("C"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation MSE")
    ax.set_title(f"({panel}) {title}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")


def _fits_json(fits_by_panel: dict, chinchilla) -> dict:
    out = {}
    for p, f in fits_by_panel.items():
        d = {"n_runs": f["n_runs"], "x": f["x"]}
        for k in ("fit", "fit_sat"):
            if k in f:
                d[k] = f[k].as_dict()
        if "frontier_fit" in f:
            d["frontier_fit"] = f["frontier_fit"].as_dict()
        if "frontier_idx" in f:
            d["frontier_runs"] = [int(i) for i in f["frontier_idx"]]
        out[p] = d
    if chinchilla is not None:
        out["chinchilla"] = chinchilla.as_dict()
    return out


def make_figure5(studies: list[str], out_dir: Path, n_boot: int = 200, log: bool = True) -> dict:
    """Draw and save Figure 5 for the given studies; returns the fits (also in fits.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fm4npp import runs

    trials: list[TrialRun] = []
    found = []
    for s in studies:
        got = load_study(s)
        print(f"[figure5] study {s}: {len(got)} finished trials")
        if got:
            found.append(s)
        trials += got
    if not trials:
        raise SystemExit(f"no finished trials for {studies} in {runs.tracking_uri()}")
    panels = panel_points(trials)
    fits = {p: fit_panel(p, pts, n_boot) for p, pts in panels.items()}
    chin = None
    ns, ds = {t.N for t in trials}, {t.D for t in trials}
    if len(ns) >= 2 and len(ds) >= 2 and len(trials) >= 6:
        try:
            chin = powerlaw.fit_chinchilla([t.N for t in trials], [t.D for t in trials],
                                           [t.val_mse for t in trials])
        except ValueError as exc:
            print(f"[figure5] no L(N, D) fit: {exc}")

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False)
    for ax, p in zip(axes[0], sorted(panels)):
        draw_panel(ax, p, panels[p], fits[p])
    fig.suptitle("FM4NPP neural scaling: " + ", ".join(found), fontsize=9)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out_dir / f"figure5.{ext}", dpi=150)
        written.append(out_dir / f"figure5.{ext}")
    plt.close(fig)
    for p in sorted(panels):
        fig, ax = plt.subplots(figsize=(5.0, 4.0))
        draw_panel(ax, p, panels[p], fits[p])
        fig.tight_layout()
        for ext in ("png", "pdf"):
            fig.savefig(out_dir / f"figure5{p}.{ext}", dpi=150)
            written.append(out_dir / f"figure5{p}.{ext}")
        plt.close(fig)
    summary = {"studies": found, "tracking_uri": runs.tracking_uri(),
               "runs": [t.__dict__ for t in trials], "fits": _fits_json(fits, chin)}
    (out_dir / "fits.json").write_text(json.dumps(summary, indent=1))
    written.append(out_dir / "fits.json")

    for p, f in sorted(fits.items()):
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
            for p, f in fits.items():
                if "fit" in f:
                    var = {"D_set": "D"}.get(f["x"], f["x"])
                    client.log_metric(parent.info.run_id, f"alpha_{var}", f["fit"].alpha)
                if "frontier_fit" in f:
                    client.log_metric(parent.info.run_id, "alpha_C_frontier",
                                      f["frontier_fit"].alpha)
    for path in written:
        print(f"[figure5] wrote {path}")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", action="append", default=[],
                    help="study name, e.g. model_scaling-cpu (repeatable)")
    ap.add_argument("--preset", default="",
                    help="shortcut: the three studies <kind>-<preset> (those that exist)")
    ap.add_argument("--out", required=True, help="output directory for PNG/PDF/fits.json")
    ap.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples per fit")
    ap.add_argument("--no-log", action="store_true", help="do not log to the parent runs")
    args = ap.parse_args(argv)
    studies = list(args.study) + [f"{k}-{args.preset}" for k in KINDS if args.preset]
    if not studies:
        ap.error("give --study NAME or --preset NAME")
    make_figure5(studies, Path(args.out), n_boot=args.n_boot, log=not args.no_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
