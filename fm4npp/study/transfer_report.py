"""The transfer study's report from its finished MLflow cells: the proposal's M1-M4, measured.

Each benchmark's rows (one per frozen FM, AdapterOnly, from scratch) are read at its largest
labelled subset: the seed mean and the seed interval, [min, max] over seeds. "Beats" means the
intervals are apart in the metric's good direction with at least two seeds on each side (one
seed has no interval), as in the objectives table. Label savings against from scratch are read
off the per-n mean curves (fm4npp.downstream.studies.label_saving_factor). The verdicts:

- M1 (mixed-domain helps): the mixture FM beats the best single-domain FM (the TPC-only one
  included) on at least one silicon-tracker benchmark and on at least one cross-facility one
  (ALEPH, ZEUS or the EIC proxy).
- M2 (label efficiency): some FM reaches from scratch's best score with >= 4x fewer labelled
  events on at least one benchmark.
- M3 (more detectors help): the mixture FM (its data adds MVTX/INTT and LEP/ZEUS events to the
  TPC) beats the TPC-only FM on at least one benchmark outside the TPC-only data.
- M4 (ep to EIC): the FM pretrained on ZEUS (HERA ep) data beats AdapterOnly on at least one
  EIC-style proxy task.
A verdict whose rows were not measured is "not met" with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fm4npp.downstream.studies import higher_is_better

# The metric each task is judged on: macro recall for PID (accuracy rewards predicting pions),
# F1 of the electron class (accuracy rewards "no electron"), the log10 Q2 resolution.
VERDICT = {"tracking": "ari_event_mean", "pid": "macro_recall", "noise": "macro_recall",
           "electron": "f1", "q2": "resolution"}
LOWER_IS_BETTER = {m for m in VERDICT.values() if not higher_is_better(m)}
HEADLINE = {"tracking": ("ari_event_mean", "efficiency", "purity"),
            "pid": ("accuracy", "macro_recall", "macro_precision"),
            "noise": ("accuracy", "macro_recall", "macro_precision"),
            "electron": ("f1", "efficiency", "purity"),
            "q2": ("resolution", "bias")}
INTERVAL = "min-max over seeds"


def _stats(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(np.mean(v)), "lo": float(np.min(v)), "hi": float(np.max(v)), "n": len(v)}


def beats(a: dict, b: dict, metric: str) -> bool:
    """``a``'s seed interval entirely better than ``b``'s (>= 2 seeds each)."""
    if a["n"] < 2 or b["n"] < 2:
        return False
    return a["hi"] < b["lo"] if metric in LOWER_IS_BETTER else a["lo"] > b["hi"]


def _gain(a: dict, b: dict, metric: str) -> float:
    d = a["mean"] - b["mean"]
    return -d if metric in LOWER_IS_BETTER else d


def row_name(cell: dict) -> str:
    return {"raw": "AdapterOnly", "scratch": "from scratch"}.get(cell["source"], f"FM {cell['backbone']}")


def benchmark_table(cells: list[dict], task: str) -> dict:
    """Rows at the largest labelled subset and each row's per-n mean curve of the verdict metric."""
    metric = VERDICT[task]
    by: dict[str, dict[int, list]] = {}
    for c in cells:
        by.setdefault(row_name(c), {}).setdefault(c["n_train"], []).append(c)
    rows, curves = {}, {}
    for row, per_n in sorted(by.items()):
        n = max(per_n)
        top = per_n[n]
        rows[row] = {"n_train": n, "seeds": sorted(c["seed"] for c in top),
                     "trainable_params": top[0]["metrics"].get("trainable_params"),
                     "metrics": {m: _stats([c["metrics"].get(m, np.nan) for c in top])
                                 for m in HEADLINE[task]}}
        curves[row] = {int(k): float(np.mean([c["metrics"].get(metric, np.nan) for c in v]))
                       for k, v in sorted(per_n.items())}
    return {"task": task, "metric": metric, "rows": rows, "curves": curves}


def _saving(curves: dict, fm_row: str, metric: str) -> dict | None:
    from fm4npp.downstream.studies import label_saving_factor

    if fm_row not in curves or "from scratch" not in curves:
        return None
    f, s = curves[fm_row], curves["from scratch"]
    return label_saving_factor(list(f), list(f.values()), list(s), np.array(list(s.values())),
                               higher_is_better=metric not in LOWER_IS_BETTER)


def _compare(tables: dict, bench: str, a: str, b: str) -> dict | None:
    t = tables[bench]
    if a not in t["rows"] or b not in t["rows"]:
        return None
    m = t["metric"]
    x, y = t["rows"][a]["metrics"][m], t["rows"][b]["metrics"][m]
    return {"benchmark": bench, "metric": m, "row": a, "versus": b, "gain": _gain(x, y, m),
            "beats": beats(x, y, m), "seeds": [x["n"], y["n"]]}


def _verdict(comparisons: list, wanted: tuple[str, ...], missing: str) -> dict:
    """Met when, for every kind in ``wanted`` (for any kind when empty), some comparison of that
    kind beats its rival."""
    comparisons = [c for c in comparisons if c is not None]
    if not comparisons:
        return {"met": False, "reason": missing, "evidence": {}}
    won = {c["kind"] for c in comparisons if c["beats"]}
    return {"met": set(wanted) <= won if wanted else bool(won), "evidence": {"comparisons": comparisons,
                                                     "kinds_measured": sorted({c["kind"] for c in comparisons})}}


def verdicts(spec: dict, tables: dict) -> dict:
    fms = spec["fms"]
    # silicon / cross-facility (the EIC proxy is another facility too) / tpc
    kind = {b: {"eic": "cross-facility"}.get(v["kind"], v["kind"])
            for b, v in spec["benchmarks"].items() if b in tables}
    eic = [b for b, v in spec["benchmarks"].items() if b in tables and v["kind"] == "eic"]
    by_kind = {k: [f"FM {n}" for n, v in fms.items() if v["kind"] == k]
               for k in ("mixture", "single", "tpc-only")}
    mix, tpc = by_kind["mixture"][:1], by_kind["tpc-only"][:1]
    singles = by_kind["single"] + tpc
    zeus = [f"FM {n}" for n, v in fms.items() if v["kind"] == "single" and v["domains"] == ["zeus"]][:1]

    def compare(b, a, rival):
        c = _compare(tables, b, a, rival)
        return c and {**c, "kind": kind[b]}

    m1 = []
    for b in (b for b, k in kind.items() if k != "tpc" and mix):
        rows, m = tables[b]["rows"], tables[b]["metric"]
        present = [s for s in singles if s in rows]
        if present:  # the best single-domain FM on this benchmark is the rival
            best = max(present, key=lambda s: _gain(rows[s]["metrics"][m], {"mean": 0.0}, m))
            m1.append(compare(b, mix[0], best))
    m3 = [compare(b, mix[0], tpc[0]) for b, k in kind.items() if k != "tpc" and mix and tpc]
    m4 = [compare(b, zeus[0], "AdapterOnly") for b in eic if zeus]
    out = {"M1": _verdict(m1, ("silicon", "cross-facility"),
                          "no mixture FM, or no silicon / cross-facility benchmark measured"),
           "M3": _verdict(m3, (), "no mixture and TPC-only FM on a benchmark outside the TPC data")}
    out["M4"] = _verdict(m4, (), "no ZEUS-pretrained FM on an EIC proxy benchmark")
    if out["M4"]["evidence"]:
        out["M4"]["evidence"]["also"] = [c for c in (compare(b, zeus[0], r) for b in eic
                                                     for r in ("from scratch", *tpc)) if c]
    savings = []
    for b, t in tables.items():
        for row in (r for r in t["rows"] if r.startswith("FM ")):
            s = _saving(t["curves"], row, t["metric"])
            if s is not None:
                savings.append({"benchmark": b, "row": row, "metric": t["metric"], **s})
    four = [s for s in savings if s["factor"] is not None and s["factor"] >= 4]
    out["M2"] = ({"met": bool(four), "evidence": {"savings": savings, "at_least_4x": four}}
                 if savings else {"met": False, "reason": "no FM and from-scratch curves", "evidence": {}})
    return {k: out[k] for k in ("M1", "M2", "M3", "M4")}


def transfer_report(study: str, experiment: str) -> dict:
    """The report of transfer study ``study`` (ValueError if it has no spec or no cells)."""
    from fm4npp import runs
    from fm4npp.downstream.studies import load_study_cells

    parent = runs.find_runs(experiment, f"tags.study = '{study}' and tags.`fm4npp.transfer_parent` = '1'")
    if not parent:
        raise ValueError(f"no transfer study {study!r} in MLflow experiment {experiment!r}")
    import mlflow

    spec = mlflow.artifacts.load_dict(f"{parent[0].info.artifact_uri}/transfer_spec.json")
    tables = {}
    for bench, b in spec["benchmarks"].items():
        cells = load_study_cells(f"{study}/{bench}", experiment)
        if cells:
            tables[bench] = benchmark_table(cells, b["task"])
    if not tables:
        raise ValueError(f"transfer study {study!r}: no finished downstream cells yet")
    return assemble(study, spec, tables)


def assemble(study: str, spec: dict, tables: dict) -> dict:
    """The report of measured benchmark tables (``benchmark_table`` output per benchmark)."""
    matrix = {b: {r: _gain(t["rows"][r]["metrics"][t["metric"]],
                           t["rows"]["AdapterOnly"]["metrics"][t["metric"]], t["metric"])
                  for r in t["rows"] if r.startswith("FM ")}
              for b, t in tables.items() if "AdapterOnly" in t["rows"]}
    return {"study": study, "interval": INTERVAL, "spec": spec, "benchmarks": tables,
            "matrix_gain_vs_adapter_only": matrix, "verdicts": verdicts(spec, tables)}


def _fmt(s: dict) -> str:
    return f"{s['mean']:.4f} [{s['lo']:.4f}, {s['hi']:.4f}]" if s["n"] > 1 else f"{s['mean']:.4f}"


def to_markdown(report: dict) -> str:
    lines = [f"# Transfer study `{report['study']}`", "",
             f"Seed mean [{report['interval']}] at each benchmark's largest labelled subset.", ""]
    for b, t in report["benchmarks"].items():
        heads = HEADLINE[t["task"]]
        lines += [f"## {b} ({t['task']}; judged on {t['metric']})", "",
                  "| row | n | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
        for row, r in t["rows"].items():
            lines.append(f"| {row} | {r['n_train']} | " + " | ".join(_fmt(r["metrics"][m]) for m in heads) + " |")
        lines.append("")
    matrix = report["matrix_gain_vs_adapter_only"]
    fms = sorted({r for per in matrix.values() for r in per})
    if fms:
        lines += ["## Transfer matrix: gain over AdapterOnly (judged metric; + is better)", "",
                  "| FM | " + " | ".join(matrix) + " |", "|---|" + "---|" * len(matrix)]
        lines += [f"| {f} | " + " | ".join(f"{matrix[b][f]:+.4f}" if f in matrix[b] else "–"
                                           for b in matrix) + " |" for f in fms]
        lines.append("")
    lines += ["## Verdicts", ""]
    for k, v in report["verdicts"].items():
        why = v.get("reason") or _evidence_line(k, v["evidence"])
        lines.append(f"- **{k}: {'met' if v['met'] else 'not met'}** — {why}")
    return "\n".join(lines) + "\n"


def _evidence_line(key: str, ev: dict) -> str:
    if key == "M2":
        best = max((s for s in ev["savings"] if s["factor"] is not None), key=lambda s: s["factor"],
                   default=None)
        if best is None:
            return "no FM reaches from scratch's best score on any benchmark"
        return (f"best saving {best['factor']:.1f}x{' (lower bound)' if best['bound'] else ''} "
                f"({best['row']}, {best['benchmark']}, {best['metric']})")
    def where(c):
        if min(c["seeds"]) < 2:
            return "one seed: no interval"
        return f"{'beyond' if c['beats'] else 'within'} the seed interval"

    return "; ".join(f"{c['benchmark']}: {c['row']} vs {c['versus']} {c['gain']:+.4f} ({where(c)})"
                     for c in ev.get("comparisons", []))


def write_report(report: dict, out_dir: Path) -> list[Path]:
    from fm4npp.files import atomic_write_json, atomic_write_text
    from fm4npp.study.transfer_figures import draw

    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "transfer.md", out_dir / "transfer.json"
    atomic_write_text(md, to_markdown(report))
    atomic_write_json(js, {**report["verdicts"], "report": report}, indent=1, sort_keys=True)
    return [md, js, *draw(report, out_dir)]
