"""muP coordinate check: how activations move after a few Adam steps, across widths.

For each width the same small FM4NPP (2 blocks) takes a few AdamW steps on a fixed batch at
the same base learning rate, under the standard parameterization (SP) and under muP. We record
the RMS change of activations from initialisation (B/C projection, mixer output, residual
stream, predictions). Under muP the changes stay flat with width; under SP they grow. The
slope d log(RMS change) / d log(width) summarises it (0 = flat). A third variant scales the
W_B / W_C learning rate as m^-1/2 (the SGD-style muP-SSM exponent) to justify the choice in
fm4npp.model.mup.

  python benchmarks/mup_coord_check.py [--quick]
writes benchmarks/results/mup_coord_check.{json,png}; prints the JSON as its last line.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from fm4npp.bench_report import emit, results_dir
from fm4npp.model import mup
from fm4npp.model.backbone import FM4NPP
from fm4npp.model.config import ModelConfig

RESULTS = results_dir(__file__)

ACTS = ("bc", "mixer", "hidden", "preds")


def _batch(seed: int, length: int):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(2, length, 3, generator=g)
    energy = torch.randn(2, length, generator=g)
    # A smooth, learnable target: shifted copies of the point's own coordinates.
    targets = coords.unsqueeze(2) + 0.05 * torch.arange(10).view(1, 1, 10, 1) / 10
    return coords, energy, targets


def _activations(model, coords, energy):
    acts, last = {}, model.blocks[-1]
    hooks = [last.mixer.bc_proj.register_forward_hook(lambda m, i, o: acts.__setitem__("bc", o)),
             last.mixer.register_forward_hook(lambda m, i, o: acts.__setitem__("mixer", o))]
    with torch.no_grad():
        preds, hidden = model(coords, energy, return_hidden=True)
    for h in hooks:
        h.remove()
    acts.update(hidden=hidden[-1], preds=preds)
    return {k: v.detach().clone() for k, v in acts.items()}


def run_one(width: int, variant: str, seed: int, steps: int, lr: float, length: int, base: int):
    cfg = ModelConfig(d_model=width, n_layers=2, d_state=16, headdim=16, chunk_size=64,
                      mup=variant != "sp", mup_base_width=base)
    saved = mup.BC_LR_EXPONENT
    mup.BC_LR_EXPONENT = 0.5 if variant == "mup_bc_sqrt" else saved
    try:
        torch.manual_seed(seed)
        model = FM4NPP(cfg)
        opt = torch.optim.AdamW(mup.param_groups(model, lr, weight_decay=0.0))
    finally:
        mup.BC_LR_EXPONENT = saved
    coords, energy, targets = _batch(seed, length)
    init = _activations(model, coords, energy)
    for _ in range(steps):
        loss = (model(coords, energy) - targets).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    now = _activations(model, coords, energy)
    rms = lambda t: t.square().mean().sqrt().item()  # noqa: E731
    return {k: {"init": rms(init[k]), "delta": rms(now[k] - init[k])} for k in ACTS}


def slope(widths, values):
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(result["curves"])
    fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 3.6), sharey=True)
    for ax, v in zip(axes, variants):
        for act in ACTS:
            ys = result["curves"][v][act]
            ax.loglog(result["widths"], ys, "o-", label=f"{act} (slope {result['slopes'][v][act]:+.2f})")
        ax.set_xticks(result["widths"], [str(w) for w in result["widths"]])
        ax.minorticks_off()
        ax.set_title(v)
        ax.set_xlabel("width d_model")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"RMS change after {result['steps']} Adam steps")
    fig.suptitle("muP coordinate check (flat = width-independent updates)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer widths and one seed")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0 = torch's choice); 1 avoids OpenMP stalls on shared cores")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    widths = [32, 64, 128, 256] if args.quick else [32, 64, 128, 256, 512]
    seeds = [0] if args.quick else [0, 1]
    length, base = 256, 32
    variants = ("sp", "mup", "mup_bc_sqrt")
    t0 = time.time()
    curves = {v: {a: [] for a in ACTS} for v in variants}
    for v in variants:
        for w in widths:
            runs = [run_one(w, v, s, args.steps, args.lr, length, base) for s in seeds]
            for a in ACTS:
                curves[v][a].append(float(np.mean([r[a]["delta"] for r in runs])))
    slopes = {v: {a: slope(widths, curves[v][a]) for a in ACTS} for v in variants}
    result = {
        "benchmark": "mup_coord_check",
        "widths": widths, "steps": args.steps, "lr": args.lr, "seq_len": length,
        "base_width": base, "seeds": len(seeds), "curves": curves, "slopes": slopes,
        "max_abs_slope": {v: max(abs(s) for s in slopes[v].values()) for v in variants},
        "seconds": round(time.time() - t0, 1),
    }
    result["mup_flat"] = result["max_abs_slope"]["mup"] < 0.25 < result["max_abs_slope"]["sp"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(result, RESULTS / "mup_coord_check.png")
    emit("mup_coord_check", result, RESULTS)
    return 0 if all(math.isfinite(x) for v in slopes.values() for x in v.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
