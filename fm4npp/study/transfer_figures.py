"""The transfer report's figures: label-efficiency curves per benchmark, the transfer matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def draw(report: dict, out_dir: Path) -> list[Path]:
    """label_efficiency.{png,pdf} and transfer_matrix.{png,pdf} in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fm4npp.downstream.studies import higher_is_better

    written = []
    tables = report["benchmarks"]
    n = len(tables)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (bench, t) in zip(axes.flat, tables.items()):
        for row, curve in t["curves"].items():
            ns = np.array(sorted(curve), float)
            ax.plot(ns, [curve[int(k)] for k in ns], marker="o", label=row,
                    ls="--" if not row.startswith("FM ") else "-")
        ax.set_xscale("log")
        ticks = sorted({int(k) for c in t["curves"].values() for k in c})
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_title(bench, fontsize=10)
        ax.set_xlabel("labelled events")
        ax.set_ylabel(t["metric"] + ("" if higher_is_better(t["metric"]) else " (lower is better)"))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    written += _save(fig, out_dir / "label_efficiency")
    plt.close(fig)

    matrix = report["matrix_gain_vs_adapter_only"]
    benches = list(matrix)
    fms = sorted({r for b in benches for r in matrix[b]})
    if benches and fms:
        m = np.array([[matrix[b].get(f, np.nan) for b in benches] for f in fms])
        fig, ax = plt.subplots(figsize=(1.3 * len(benches) + 2.5, 0.6 * len(fms) + 1.8))
        lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
        im = ax.imshow(m, cmap="RdBu", vmin=-lim or -1, vmax=lim or 1, aspect="auto")
        ax.set_xticks(range(len(benches)), benches, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(fms)), fms, fontsize=8)
        for i in range(len(fms)):
            for j in range(len(benches)):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:+.3f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label="gain over AdapterOnly (judged metric)")
        ax.set_title("transfer matrix: pretraining data x benchmark", fontsize=10)
        fig.tight_layout()
        written += _save(fig, out_dir / "transfer_matrix")
        plt.close(fig)
    return written


def _save(fig, stem: Path) -> list[Path]:
    out = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p, dpi=130)
    return out
