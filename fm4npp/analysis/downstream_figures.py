"""Figures 6, 7 and 8 of the paper from the downstream studies and a trained adapter.

    python analysis/downstream_figures.py fig6 --study downstream-model-size --out figures/ds
    python analysis/downstream_figures.py fig7 --study downstream-data-efficiency --out figures/ds
    python analysis/downstream_figures.py fig8 --adapter ADAPTER_DIR --out figures/ds [--event 0]
    python analysis/downstream_figures.py table --study downstream-model-size

fig6: each task's score vs the frozen backbone's parameter count (log x), AdapterOnly dashed.
fig7: tracking ARI (or the study's task score) vs labelled training events (log x), one curve per
      backbone, AdapterOnly dashed; the label-saving factor (how many times fewer labelled events
      the FM adapter needs to match AdapterOnly's best) is printed, drawn and written to JSON.
fig8: one test event's spacepoints, PCA and t-SNE of the raw FM features (layer mix) and of the
      same points after the adapter's single linear map, coloured by truth track.
table: the study's Table-2-style table (largest training set per row).
Every figure is written as PNG and PDF (plus a JSON of the plotted numbers) to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

METRIC_LABEL = {"ari_event_mean": "ARI (per-event mean)", "accuracy": "accuracy",
                "macro_recall": "macro recall", "efficiency": "tracking efficiency"}
TASK_TITLE = {"tracking": "Track finding", "pid": "Particle ID", "noise": "Noise tagging"}


def _save(fig, out: Path, name: str, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(out / f"{name}.{ext}", dpi=150, bbox_inches="tight")
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=float))
    print(f"wrote {out / name}.png/.pdf/.json")


def _mean_by(cells, key, metric):
    """{group: (x sorted, mean, std)} over seeds."""
    acc = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if metric in c["metrics"]:
            acc[c["group"]][key(c)].append(c["metrics"][metric])
    return {g: (np.array(sorted(d)), np.array([np.mean(d[x]) for x in sorted(d)]),
                np.array([np.std(d[x]) for x in sorted(d)])) for g, d in acc.items()}


def fig6(study: str, out: Path, metrics: dict | None = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fm4npp.downstream.studies import PRIMARY, load_study_cells

    cells = load_study_cells(study)
    if not cells:
        raise SystemExit(f"no finished cells for study {study!r}")
    metrics = metrics or PRIMARY
    tasks = [t for t in ("tracking", "pid", "noise") if any(c["task"] == t for c in cells)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    data = {}
    for ax, task in zip(axes[0], tasks):
        m = metrics[task]
        fm = [c for c in cells if c["task"] == task and c["source"] == "fm"]
        pts = defaultdict(list)
        for c in fm:
            pts[(c["metrics"]["backbone_params"], c["backbone"])].append(c["metrics"][m])
        xs = sorted(pts)
        y = [np.mean(pts[k]) for k in xs]
        e = [np.std(pts[k]) for k in xs]
        ax.errorbar([k[0] for k in xs], y, yerr=e, marker="o", label="FM4NPP (frozen) + adapter")
        for (n, label), yy in zip(xs, y):
            ax.annotate(label, (n, yy), textcoords="offset points", xytext=(4, -10), fontsize=8)
        base = [c["metrics"][m] for c in cells if c["task"] == task and c["source"] == "raw"]
        if base:
            ax.axhline(np.mean(base), ls="--", color="gray", label="AdapterOnly")
        ax.set_xscale("log")
        ax.set_xlabel("FM parameters")
        ax.set_ylabel(METRIC_LABEL.get(m, m))
        ax.set_title(TASK_TITLE[task])
        ax.legend(fontsize=8)
        data[task] = {"metric": m, "fm": [{"backbone": k[1], "params": k[0], "mean": yy, "std": ee}
                                          for k, yy, ee in zip(xs, y, e)],
                      "adapter_only": float(np.mean(base)) if base else None}
    fig.suptitle("Downstream performance vs FM size (Figure 6)")
    fig.tight_layout()
    _save(fig, out, "figure6", data)
    plt.close(fig)
    return data


def fig7(study: str, out: Path, metric: str = "", task: str = "") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fm4npp.downstream.studies import PRIMARY, label_saving_factor, load_study_cells

    # several studies may share one curve (e.g. the full-data cells of the model-size study)
    cells = [c for s in study.split(",") for c in load_study_cells(s)]
    task = task or (cells[0]["task"] if cells else "")
    cells = [c for c in cells if c["task"] == task]
    if not cells:
        raise SystemExit(f"no finished {task or ''} cells for study {study!r}")
    metric = metric or PRIMARY[task]
    for c in cells:
        c["group"] = c["backbone"] if c["source"] == "fm" else "AdapterOnly"
    curves = _mean_by(cells, lambda c: c["n_train"], metric)
    fig, ax = plt.subplots(figsize=(5, 3.8))
    data = {"task": task, "metric": metric, "curves": {}, "label_saving": {}}
    base = curves.get("AdapterOnly")
    for g, (x, y, e) in sorted(curves.items()):
        style = dict(ls="--", color="gray") if g == "AdapterOnly" else {}
        ax.errorbar(x, y, yerr=e, marker="o", label=g if g == "AdapterOnly" else f"FM {g}", **style)
        data["curves"][g] = {"n_train": x.tolist(), "mean": y.tolist(), "std": e.tolist()}
        if base is not None and g != "AdapterOnly":
            ls = label_saving_factor(x, y, base[0], base[1])
            data["label_saving"][g] = ls
            if ls["factor"] is not None:
                bound = ">= " if ls["bound"] == "lower" else ""
                print(f"label saving, FM {g}: matches AdapterOnly's best {metric} {ls['target']:.4f} "
                      f"(at {ls['n_base']:.0f} events) with {ls['n_fm']:.0f} events: {bound}{ls['factor']:.1f}x")
                ax.annotate(f"{bound}{ls['factor']:.1f}x fewer labels", (ls["n_fm"], ls["target"]),
                            textcoords="offset points", xytext=(5, -14), fontsize=8)
            else:
                print(f"label saving, FM {g}: never reaches AdapterOnly's best {metric} {ls['target']:.4f}")
    if base is not None:
        ax.axhline(float(np.max(base[1])), ls=":", color="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training events")
    ax.set_ylabel(METRIC_LABEL.get(metric, metric))
    ax.set_title(f"{TASK_TITLE[task]}: data efficiency (Figure 7)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out, "figure7", data)
    plt.close(fig)
    return data


def embeddings_for_event(adapter_dir: str, event_index: int = 0, data: str = "", max_tracks: int = 12):
    """(raw FM features, post-linear-map features, track ids) of one test event's spacepoints
    (noise points left out; the ``max_tracks`` largest tracks kept so colours stay readable)."""
    import torch

    from fm4npp.downstream.features import backbone_states, load_backbone
    from fm4npp.downstream.adapters import load_adapter
    from fm4npp.downstream.splits import load_split

    model, cfg, result = load_adapter(adapter_dir)
    if cfg.task != "tracking" or cfg.source != "fm":
        raise SystemExit(f"{adapter_dir}: fig8 needs a tracking adapter on frozen FM features")
    if data:
        cfg.data = data
    backbone, extra = load_backbone(cfg.backbone)
    ev = load_split(cfg, cfg.test_split, event_index + 1, extra)[event_index]
    states = backbone_states(backbone, [ev])[0]
    with torch.no_grad():
        fm = model.source({"states": states[None]})[0]  # (N, d_model) what the adapter receives
        post = model.adapter.embed(fm[None])[0]  # after the single linear map
    tid = np.asarray(ev["track_id"])
    keep = ~np.asarray(ev["noise"], bool) & (tid >= 0)
    ids, counts = np.unique(tid[keep], return_counts=True)
    big = ids[np.argsort(-counts)[:max_tracks]]
    keep &= np.isin(tid, big)
    return fm.numpy()[keep], post.numpy()[keep], tid[keep]


def fig8(adapter_dir: str, out: Path, event_index: int = 0, data: str = "", seed: int = 0) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    fm, post, tid = embeddings_for_event(adapter_dir, event_index, data)
    _, colour = np.unique(tid, return_inverse=True)
    fig, axes = plt.subplots(2, 2, figsize=(8, 7.5))
    info = {"n_points": int(len(tid)), "n_tracks": int(colour.max() + 1)}
    for col, (name, x) in enumerate((("FM features", fm), ("after linear map", post))):
        # silhouette by truth track in the full feature space: a number for "clusters by track"
        info[f"silhouette_{'fm' if col == 0 else 'post'}"] = float(silhouette_score(x, tid)) if info["n_tracks"] > 1 else None
        for row, (proj, z) in enumerate((
            ("PCA", PCA(2, random_state=seed).fit_transform(x)),
            ("t-SNE", TSNE(2, random_state=seed, init="pca", perplexity=min(30, max(5, len(x) // 4))).fit_transform(x)),
        )):
            ax = axes[row, col]
            ax.scatter(z[:, 0], z[:, 1], c=colour, cmap="tab20", s=6)
            ax.set_title(f"{name}: {proj}")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Figure 8: spacepoint embeddings of one test event, coloured by track "
                 f"(silhouette {info['silhouette_fm']:.2f} -> {info['silhouette_post']:.2f})"
                 if info["silhouette_fm"] is not None else "Figure 8")
    fig.tight_layout()
    _save(fig, out, "figure8", info)
    plt.close(fig)
    return info


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="fig", required=True)
    for name in ("fig6", "fig7"):
        s = sub.add_parser(name)
        s.add_argument("--study", required=True, help="study name (fig7: comma-separated names are merged)")
        s.add_argument("--out", required=True)
        s.add_argument("--metric", default="", help="metric to plot (default: the task's primary)")
    s.add_argument("--task", default="", help="fig7: task of the curve (default: the first cell's)")
    s = sub.add_parser("table", help="Table-2-style table of a study's cells")
    s.add_argument("--study", required=True)
    s.add_argument("--out", default="", help="also write the table as text here")
    s = sub.add_parser("fig8")
    s.add_argument("--adapter", required=True, help="`fm4npp finetune --task tracking --source fm --out` dir")
    s.add_argument("--out", required=True)
    s.add_argument("--event", type=int, default=0, help="index of the test event")
    s.add_argument("--data", default="")
    a = ap.parse_args(argv)
    if a.fig == "table":
        from fm4npp.downstream.studies import study_table

        text = study_table(a.study)
        print(text)
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(text + "\n")
        return 0
    out = Path(a.out)
    if a.fig == "fig6":
        fig6(a.study, out, None if not a.metric else {t: a.metric for t in ("tracking", "pid", "noise")})
    elif a.fig == "fig7":
        fig7(a.study, out, a.metric, a.task)
    else:
        fig8(a.adapter, out, a.event, a.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
