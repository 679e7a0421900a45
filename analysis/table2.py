"""Table 2 of the paper from the finished MLflow runs of `fm4npp finetune`.

    python analysis/table2.py --out figures/table2
    python analysis/table2.py --out DIR --experiment fm4npp-finetune --interval t
    python analysis/table2.py --out DIR --filter "params.n_train_events = '300'"

Rows: FM4NPP (one per frozen backbone size present, `w<width>-L<layers>`), AdapterOnly,
FromScratch, the four hit-classification GNNs and the Exa.TrkX-style track finder; columns per
task the paper's metrics (track finding: pooled ARI, double-majority efficiency and purity; PID
and noise tagging: accuracy, macro recall, macro precision) and the trainable parameters.

Seeds: every FINISHED run of a (row, task) is one seed (the newest run per seed counts). A cell
is the mean over seeds with, by default (``--interval minmax``), the min-max range over seeds
in brackets; ``--interval t`` gives a two-sided 95 % Student-t interval of the mean instead
(needs >= 2 seeds). Runs with different data are refused: every run must carry the same data
set, bins and test-event fingerprint (tags written by fm4npp.downstream.mlflow_log), and the
runs of one cell the same number of training events; the error names the runs. Writes
table2.md, table2.tex and table2.json to --out.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from fm4npp import runs
from fm4npp.downstream.config import BY_SOURCE, MODELS, TASKS, FinetuneConfig, model_info
from fm4npp.files import atomic_write_json, atomic_write_text

EXPERIMENT = FinetuneConfig.experiment  # where `fm4npp finetune` logs by default
FINGERPRINT = ("fm4npp.data_hash", "fm4npp.bins_hash", "fm4npp.test_events_hash")
# (metric key logged by finetune, column heading); the paper's columns for each task
COLUMNS = {
    "tracking": [("ari_pooled", "ARI"), ("efficiency", "efficiency"), ("purity", "purity")],
    "pid": [("accuracy", "acc."), ("macro_recall", "recall"), ("macro_precision", "pre.")],
    "noise": [("accuracy", "acc."), ("macro_recall", "recall"), ("macro_precision", "pre.")],
}
TASK_TITLES = {"tracking": "Track finding", "pid": "Particle identification", "noise": "Noise tagging"}
INTERVALS = ("minmax", "t")


class MismatchError(ValueError):
    """Runs that must not share a table."""


def _name(run) -> str:
    return run.data.tags.get(runs.RUN_NAME_TAG, run.info.run_name or "") + f" ({run.info.run_id})"


def row_of(run) -> str:
    """The row: the model's label; an FM's by backbone size, and by the backbone's name where a
    study's cell gives one (tag ``backbone``: FMs of one size pretrained on other data, e.g. the
    transfer study's domains, are rows of their own, not seeds of one row)."""
    t = run.data.tags
    label = model_info(t["fm4npp.source"]).label
    if t["fm4npp.source"] != "fm":
        return label
    named = f", {t['backbone']}" if t.get("backbone") else ""
    return f"{label}({t['fm4npp.backbone_size']}{named})"


def select_runs(found, log=print) -> list:
    """Runs of `fm4npp finetune` with a data fingerprint, the newest per (task, row, seed)."""
    seen, out = set(), []
    for r in found:  # newest first
        t = r.data.tags
        if "fm4npp.model" not in t or any(k not in t for k in FINGERPRINT):
            log(f"[table2] skipping {_name(r)}: no data fingerprint (not a `fm4npp finetune` run, "
                f"or logged before Table 2 existed)")
            continue
        if t["fm4npp.task"] not in COLUMNS:  # e.g. the transfer study's electron / q2 tasks
            log(f"[table2] skipping {_name(r)}: task {t['fm4npp.task']!r} is not in Table 2")
            continue
        key = (t["fm4npp.task"], row_of(r), t.get("fm4npp.seed", r.data.params.get("seed", "0")))
        if key in seen:
            log(f"[table2] {_name(r)}: an older run of {key}, superseded by a newer one")
            continue
        seen.add(key)
        out.append(r)
    return out


def check_same_data(selected) -> None:
    """Every run on the same data set, bins and test events; one training-set size per cell."""
    groups = defaultdict(list)
    for r in selected:
        groups[tuple(r.data.tags[k] for k in FINGERPRINT)].append(r)
    if len(groups) > 1:
        lines = [f"  data {k[0] or '-'} bins {k[1] or '-'} test events {k[2]}: "
                 + ", ".join(_name(r) for r in rs) for k, rs in groups.items()]
        raise MismatchError("runs from different data (data set / bins / test events) cannot "
                            "share Table 2; choose one group with --filter:\n" + "\n".join(lines))
    cells = defaultdict(lambda: defaultdict(list))
    for r in selected:
        cells[(r.data.tags["fm4npp.task"], row_of(r))][r.data.params.get("n_train_events", "?")].append(r)
    for (task, row), by_n in cells.items():
        if len(by_n) > 1:
            detail = "; ".join(f"n_train_events={n}: " + ", ".join(_name(r) for r in rs)
                               for n, rs in by_n.items())
            raise MismatchError(f"{row} / {task}: runs trained on different numbers of events "
                                f"cannot be seeds of one cell: {detail}")


def interval(values: list[float], kind: str) -> tuple[float, float, float]:
    """(mean, lo, hi) over seeds: min-max, or a 95 % Student-t interval of the mean."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if kind == "minmax" or v.size < 2:
        return (mean, float(v.min()), float(v.max())) if kind == "minmax" else (mean, math.nan, math.nan)
    from scipy import stats

    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def _row_order(row: str, params: float) -> tuple:
    base = row.split("(")[0]
    rank = {m.label: i for i, m in enumerate(MODELS.values())}.get(base, len(MODELS))
    return rank, params, row


def build_table(selected, kind: str = "minmax") -> dict:
    """The table as data: per row and task the cells (mean, interval, per-seed values)."""
    if kind not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {kind!r}")
    check_same_data(selected)
    cells = defaultdict(lambda: defaultdict(list))
    for r in selected:
        cells[row_of(r)][r.data.tags["fm4npp.task"]].append(r)
    rows = []
    for row, by_task in cells.items():
        entry = {"row": row, "model": BY_SOURCE[next(iter(by_task.values()))[0].data.tags["fm4npp.source"]],
                 "tasks": {}}
        for task, rs in by_task.items():
            seeds = [int(r.data.tags.get("fm4npp.seed", 0)) for r in rs]
            metrics = {}
            for key, _ in COLUMNS[task]:
                vals = [r.data.metrics.get(key, math.nan) for r in rs]
                mean, lo, hi = interval(vals, kind)
                metrics[key] = {"mean": mean, "lo": lo, "hi": hi, "values": vals}
            entry["tasks"][task] = {
                "trainable_params": int(rs[0].data.metrics.get("trainable_params", 0)),
                "n_train_events": int(float(rs[0].data.params.get("n_train_events", 0) or 0)),
                "n_test_events": int(rs[0].data.tags.get("fm4npp.n_test_events", 0)),
                "seeds": seeds, "metrics": metrics, "runs": [r.info.run_id for r in rs]}
        entry["params_sort"] = min(t["trainable_params"] for t in entry["tasks"].values())
        rows.append(entry)
    rows.sort(key=lambda e: _row_order(e["row"], e.pop("params_sort")))
    tags = selected[0].data.tags if selected else {}
    return {"interval": "min-max over seeds" if kind == "minmax" else "95 % Student-t interval of the mean",
            "data": {k.split(".", 1)[1]: tags.get(k, "") for k in FINGERPRINT},
            "tasks": [t for t in TASKS if any(t in e["tasks"] for e in rows)], "rows": rows}


def _params(n: int) -> str:
    return f"{n / 1e6:.3f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _cell(m: dict, pct: bool, n_seeds: int) -> str:
    scale, unit = (100.0, "%") if pct else (1.0, "")
    text = f"{scale * m['mean']:.{2 if pct else 4}f}{unit}"
    if n_seeds > 1 and not math.isnan(m["lo"]):
        text += f" [{scale * m['lo']:.{2 if pct else 4}f}, {scale * m['hi']:.{2 if pct else 4}f}]"
    return text


def _grid(table: dict) -> tuple[list[str], list[list[str]]]:
    head = ["model"]
    for task in table["tasks"]:
        head += [f"{TASK_TITLES[task]}: #trnbl para."] + [f"{TASK_TITLES[task]}: {h}" for _, h in COLUMNS[task]]
    body = []
    for e in table["rows"]:
        line = [e["row"]]
        for task in table["tasks"]:
            c = e["tasks"].get(task)
            if c is None:
                line += ["–"] * (1 + len(COLUMNS[task]))
                continue
            n = len(c["seeds"])
            line.append(_params(c["trainable_params"]))
            line += [_cell(c["metrics"][k], task == "tracking" and k != "ari_pooled", n) for k, _ in COLUMNS[task]]
        body.append(line)
    return head, body


def _seeds_note(table: dict) -> str:
    counts = sorted({len(c["seeds"]) for e in table["rows"] for c in e["tasks"].values()})
    return (f"Mean over seeds ({'/'.join(map(str, counts))} per cell); brackets: {table['interval']}. "
            f"Test events: {', '.join(sorted({str(c['n_test_events']) for e in table['rows'] for c in e['tasks'].values()}))}.")


def to_markdown(table: dict) -> str:
    head, body = _grid(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n\n" + _seeds_note(table) + "\n"


def to_latex(table: dict) -> str:
    head, body = _grid(table)

    def esc(s: str) -> str:
        return s.replace("%", r"\%").replace("_", r"\_").replace("#", r"\#").replace("–", "--")

    lines = [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\hline",
             " & ".join(esc(h) for h in head) + r" \\", r"\hline"]
    lines += [" & ".join(esc(c) for c in r) + r" \\" for r in body]
    lines += [r"\hline", r"\end{tabular}", "% " + esc(_seeds_note(table))]
    return "\n".join(lines) + "\n"


def make_table2(out: str | Path, experiment: str = EXPERIMENT, filter_string: str = "",
                kind: str = "minmax", log=print) -> dict:
    found = runs.find_runs(experiment, filter_string, status="FINISHED", max_results=5000)
    selected = select_runs(found, log=log)
    if not selected:
        raise ValueError(f"no finished `fm4npp finetune` runs with a data fingerprint in experiment "
                         f"{experiment!r} (tracking URI {runs.tracking_uri()})"
                         + (f" matching {filter_string!r}" if filter_string else ""))
    table = build_table(selected, kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table2.md", to_markdown(table))
    atomic_write_text(out / "table2.tex", to_latex(table))
    atomic_write_json(out / "table2.json", table, indent=2)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for table2.md / .tex / .json")
    ap.add_argument("--experiment", default=EXPERIMENT, help=f"MLflow experiment (default {EXPERIMENT})")
    ap.add_argument("--filter", default="", help="MLflow filter string selecting the runs")
    ap.add_argument("--interval", choices=INTERVALS, default="minmax",
                    help="seed interval: minmax (default) or t (95 %% Student-t of the mean)")
    args = ap.parse_args(argv)
    try:
        table = make_table2(args.out, args.experiment, args.filter, args.interval,
                            log=lambda m: print(m, file=sys.stderr))
    except ValueError as exc:
        print(f"table2: error: {exc}", file=sys.stderr)
        return 2
    print(to_markdown(table))
    print(f"written to {Path(args.out) / 'table2.md'}, table2.tex, table2.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
