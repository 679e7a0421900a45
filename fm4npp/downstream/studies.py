"""Downstream studies (Figures 6 and 7) as grids of `finetune` runs tracked in MLflow.

A study is one parent MLflow run (tags ``fm4npp.study_parent=1``, ``study=<name>``) and one
child run per cell (tags ``study``, ``task``, ``source``, ``backbone``, ``n_train``, ``seed``;
metrics: every number of the task's metrics, plus ``backbone_params``). Cells run one after
another in this process: adapters on cached frozen features are small, and on a 2-core machine
a process pool would only contend. A rerun skips cells whose child run FINISHED (resume).

Events are loaded once per serialization (bins hash and config) and shared by every cell;
cells without a backbone (AdapterOnly, from scratch) take the serialization of the grid's first
FM backbone (its point cap and order), so all rows of a figure are trained and scored on the
same events. With ``out`` set in the base config,
every cell's adapter and result.json are also saved under ``<out>/<cell key>`` (e.g. for
Figure 8). Primary metrics and their directions: PRIMARY, HIGHER_IS_BETTER.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from dataclasses import dataclass

import numpy as np

from fm4npp.downstream.config import TASKS, FinetuneConfig

EXPERIMENT = "fm4npp-downstream"
# The metric a task's cells are compared by. electron: F1 of the electron class, not accuracy:
# the electron's hits are a small share of an event's, so tagging nothing already scores an
# accuracy of ~0.9; F1 needs both efficiency and purity. q2: the log10 Q2 resolution.
PRIMARY = {"tracking": "ari_event_mean", "pid": "accuracy", "noise": "accuracy", "electron": "f1",
           "q2": "resolution"}
# Direction of every metric anything ranks by (PRIMARY's, and the others worth ranking by).
HIGHER_IS_BETTER = {"ari_event_mean": True, "ari_pooled": True, "accuracy": True, "macro_recall": True,
                    "f1": True, "efficiency": True, "purity": True, "frac_within_0.1": True,
                    "resolution": False, "rmse": False}


def higher_is_better(metric: str) -> bool:
    """Whether a larger ``metric`` is better (KeyError for a metric of no known direction)."""
    return HIGHER_IS_BETTER[metric]


@dataclass
class Cell:
    task: str
    source: str  # fm | raw | scratch
    backbone_label: str  # e.g. "w32" ("" for AdapterOnly)
    backbone: str  # checkpoint dir
    n_train: int
    seed: int

    @property
    def key(self) -> str:
        who = self.backbone_label if self.source == "fm" else self.source
        return f"{self.task}-{who}-n{self.n_train}-s{self.seed}"


def parse_backbones(items: list[str]) -> dict[str, str]:
    """``LABEL=BACKBONE`` strings -> {label: model dir} (a bare BACKBONE is labelled by its
    folder name). BACKBONE is anything ``fm4npp finetune --backbone`` takes: a run name, a run
    or checkpoint directory, a ``pretrained/`` directory (features.resolve_backbone)."""
    from fm4npp.downstream.features import resolve_backbone

    out = {}
    for it in items:
        label, _, path = it.partition("=") if "=" in it else (it.rstrip("/").split("/")[-1], "=", it)
        out[label] = str(resolve_backbone(path))
    return out


def run_cells(study: str, cells: list[Cell], base: FinetuneConfig, experiment: str = EXPERIMENT,
              log=print) -> list[dict]:
    """Run (or resume) every cell; returns one summary dict per cell."""
    from fm4npp import runs
    from fm4npp.downstream.features import load_backbone
    from fm4npp.downstream.mlflow_log import flat_metrics, result_tags, run_spec_of
    from fm4npp.overrides import flatten
    from fm4npp.spec import SPEC_FILE
    from fm4npp.downstream.splits import load_split, serialization
    from fm4npp.downstream.train import finetune

    parent = runs.find_runs(experiment, f"tags.study = '{study}' and tags.`fm4npp.study_parent` = '1'")
    parent_id = parent[0].info.run_id if parent else runs.start_run(
        study, params={"cells": len(cells), **{k: v for k, v in base.to_dict().items() if not isinstance(v, dict)}},
        tags={"study": study, "fm4npp.study_parent": "1"}, experiment=experiment)
    data_cache: dict[str, dict] = {}
    reference = next((c.backbone for c in cells if c.backbone), "")
    summaries = []
    for i, cell in enumerate(cells):
        name = f"{study}/{cell.key}"
        done = runs.find_runs(experiment, f"tags.`{runs.RUN_NAME_TAG}` = '{name}'", status="FINISHED")
        if done:
            r = done[0]
            log(f"[{i + 1}/{len(cells)}] {cell.key}: done before (run {r.info.run_id}), skipped")
            summaries.append({"cell": dataclasses.asdict(cell), "metrics": dict(r.data.metrics), "resumed": True})
            continue
        # AdapterOnly and from scratch see the events the way the study's first FM does (its
        # point cap and order), so every row is trained and scored on the same events
        extra = load_backbone(cell.backbone or reference)[1] if (cell.backbone or reference) else {}
        # same bins and serialization = same events (backbones of other detectors or orders
        # share a data set's bins but not its serialized events)
        scfg, bins = serialization(base, extra)
        dkey = f"{bins.hash}-{sorted(scfg.to_dict().items())}"
        if dkey not in data_cache:
            t0 = time.time()
            probe = dataclasses.replace(base, source="raw", backbone="")
            data_cache[dkey] = {
                "train": load_split(probe, base.train_split, extra=extra),
                "val": load_split(probe, base.val_split, base.val_events, extra) if base.val_events else [],
                "test": load_split(probe, base.test_split, base.n_test_events, extra),
            }
            log(f"loaded {[len(v) for v in data_cache[dkey].values()]} train/val/test events "
                f"({time.time() - t0:.0f} s)")
        cfg = dataclasses.replace(base, task=cell.task, source=cell.source, backbone=cell.backbone,
                                  n_train_events=cell.n_train, seed=cell.seed, experiment="",
                                  out=str(Path(base.out) / cell.key) if base.out else "")
        log(f"[{i + 1}/{len(cells)}] {cell.key}")
        run_id = runs.start_run(name, params=flatten(cfg), parent_run_id=parent_id, experiment=experiment,
                                tags={"study": study, "task": cell.task, "source": cell.source,
                                      "backbone": cell.backbone_label, "n_train": str(cell.n_train),
                                      "seed": str(cell.seed)})
        try:
            res = finetune(cfg, data_cache[dkey], log=lambda m: log("   " + m))
        except BaseException:
            runs.end_run(run_id, "FAILED")
            raise
        c = runs.client()  # the tags of `fm4npp finetune` runs: analysis/table2.py reads cells too
        for k, v in result_tags(cfg, res).items():
            c.set_tag(run_id, k, v)
        m = flat_metrics(res["metrics"])
        m.update(backbone_params=float(res["backbone_params"]), adapter_params=float(res["adapter_params"]),
                 trainable_params=float(res["trainable_params"]), n_train_events=float(res["n_train_events"]),
                 train_seconds=float(res["train_seconds"]))
        runs.log_metrics(run_id, m, step=0)
        runs.log_dict(run_id, res, "result.json")
        runs.log_dict(run_id, run_spec_of(cfg).to_dict(), SPEC_FILE)
        runs.end_run(run_id, "FINISHED")
        log(f"   {PRIMARY[cell.task]} = {res['metrics'][PRIMARY[cell.task]]:.4f} ({res['train_seconds']:.0f} s)")
        summaries.append({"cell": dataclasses.asdict(cell), "metrics": m, "resumed": False})
    runs.end_run(parent_id, "FINISHED")
    return summaries


def load_study_cells(study: str, experiment: str = EXPERIMENT) -> list[dict]:
    """Finished cells of a downstream study: tags + metrics, newest run per cell name."""
    from fm4npp import runs

    out = {}
    for r in runs.find_runs(experiment, f"tags.study = '{study}'", status="FINISHED", max_results=5000):
        t = r.data.tags
        if t.get("fm4npp.study_parent") == "1" or "task" not in t:
            continue
        name = t.get(runs.RUN_NAME_TAG, r.info.run_id)
        if name in out:
            continue
        out[name] = {"task": t["task"], "source": t["source"], "backbone": t.get("backbone", ""),
                     # the events actually used (a request above the split size uses them all)
                     "n_train": int(r.data.metrics.get("n_train_events", t.get("n_train", 0))),
                     "seed": int(t.get("seed", 0)),
                     "metrics": dict(r.data.metrics), "run_id": r.info.run_id}
    return list(out.values())


def label_saving_factor(n_fm, score_fm, n_base, score_base, higher_is_better: bool = True) -> dict:
    """How many times fewer labelled events the FM adapter needs to match AdapterOnly's best.

    For a metric where lower is better (``higher_is_better=False``, e.g. the q2 resolution) the
    scores are negated first, so "best" and "reaches" keep their meaning; ``target`` is
    reported in the metric's own units.

    target = max AdapterOnly score, reached at n_base* events. n_fm* = the fewest events at
    which the FM curve reaches the target, linearly interpolated in log(n) between measured points
    (with several seeds pass the per-n means). factor = n_base* / n_fm*. If the FM's smallest n
    already beats the target the factor is only a lower bound (``bound = "lower"``); if the FM
    never reaches it, factor is None.
    """
    sign = 1.0 if higher_is_better else -1.0
    n_fm, s_fm = np.asarray(n_fm, float), sign * np.asarray(score_fm, float)
    score_base = sign * np.asarray(score_base, float)
    o = np.argsort(n_fm)
    n_fm, s_fm = n_fm[o], s_fm[o]
    j = int(np.nanargmax(score_base))
    target, n_star = float(score_base[j]), float(np.asarray(n_base, float)[j])
    out = {"target": sign * target, "n_base": n_star, "n_fm": None, "factor": None, "bound": ""}
    if s_fm[0] >= target:
        out.update(n_fm=float(n_fm[0]), factor=n_star / n_fm[0], bound="lower")
        return out
    for i in range(1, len(n_fm)):
        if s_fm[i] >= target:
            a, b = np.log(n_fm[i - 1]), np.log(n_fm[i])
            t = (target - s_fm[i - 1]) / (s_fm[i] - s_fm[i - 1])
            n = float(np.exp(a + t * (b - a)))
            out.update(n_fm=n, factor=n_star / n)
            return out
    return out


def study_table(study: str, experiment: str = EXPERIMENT, n_train: int | None = None) -> str:
    """Table-2-style text of a study's finished cells (largest n_train per row by default);
    a row with several seeds shows each metric's mean over them."""
    from fm4npp.downstream.tables import format_table

    groups: dict[tuple, list] = {}
    for c in load_study_cells(study, experiment):
        if n_train is None or c["n_train"] == n_train:
            groups.setdefault((c["task"], c["source"], c["backbone"]), []).append(c)
    rows, seeds = [], {}
    for (task, source, backbone), cells in groups.items():
        n = max(c["n_train"] for c in cells)
        cells = [c for c in cells if c["n_train"] == n]
        seeds[f"{task} {source} {backbone}".strip()] = sorted(c["seed"] for c in cells)
        keys = [k for k, v in cells[0]["metrics"].items() if isinstance(v, (int, float))]
        m = {k: float(np.mean([c["metrics"].get(k, np.nan) for c in cells])) for k in keys}
        rows.append({"task": task, "source": source, "backbone": backbone,
                     "trainable_params": m.get("trainable_params", float("nan")),
                     "n_train_events": n, "metrics": m})
    order = {t: i for i, t in enumerate(TASKS)}
    text = format_table(sorted(rows, key=lambda r: (order.get(r["task"], len(order)), r["source"] != "fm",
                                                    r["backbone"])))
    if len({tuple(v) for v in seeds.values()}) > 1:  # rows differ: say which seeds each mean covers
        return text + "seeds (mean per row): " + "; ".join(f"{k} {v}" for k, v in sorted(seeds.items())) + "\n"
    some = next(iter(seeds.values()), [])
    return text + (f"seeds {some}: mean per row\n" if len(some) > 1 else "")
