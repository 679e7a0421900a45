"""Table-2-style text tables of downstream results."""

from __future__ import annotations

from typing import Sequence

from fm4npp.downstream.config import model_info


def format_table(results: Sequence[dict]) -> str:
    """A Table-2-style text table: one row per (task, model)."""
    lines = []
    by_task: dict[str, list] = {}
    for r in results:
        by_task.setdefault(r["task"], []).append(r)
    for task, rs in by_task.items():
        if task == "tracking":
            lines.append(f"{'Track finding':<14}{'#trnbl para.':>14}{'ARI(ev)':>9}{'ARI(pool)':>10}"
                         f"{'eff.':>9}{'purity':>9}{'sp.eff.':>9}{'sp.pur.':>9}{'eff(restr)':>11}")
            for r in rs:
                m = r["metrics"]
                lines.append(f"{_label(r):<14}{_params(r):>14}{m['ari_event_mean']:>9.4f}{m['ari_pooled']:>10.4f}"
                             f"{100 * m['efficiency']:>8.2f}%{100 * m['purity']:>8.2f}%"
                             f"{100 * m['spacepoint_efficiency']:>8.2f}%{100 * m['spacepoint_purity']:>8.2f}%"
                             f"{100 * m.get('restricted_efficiency', float('nan')):>10.2f}%")
        elif task == "electron":  # F1 first: it is what cells are compared by (studies.PRIMARY)
            lines.append(f"{'Scattered e':<14}{'#trnbl para.':>14}{'F1':>9}{'eff.':>9}{'purity':>9}{'acc.':>9}")
            for r in rs:
                m = r["metrics"]
                lines.append(f"{_label(r):<14}{_params(r):>14}{m['f1']:>9.4f}{100 * m['efficiency']:>8.2f}%"
                             f"{100 * m['purity']:>8.2f}%{m['accuracy']:>9.4f}")
        elif task == "q2":  # resolution and bias in log10 Q2; lower resolution is better
            lines.append(f"{'log10 Q2':<14}{'#trnbl para.':>14}{'resol.':>9}{'bias':>9}{'|d|<0.1':>9}")
            for r in rs:
                m = r["metrics"]
                lines.append(f"{_label(r):<14}{_params(r):>14}{m['resolution']:>9.4f}{m['bias']:>+9.4f}"
                             f"{100 * m['frac_within_0.1']:>8.2f}%")
        else:
            lines.append(f"{('PID' if task == 'pid' else 'Noise tagging'):<14}{'#trnbl para.':>14}"
                         f"{'acc.':>9}{'recall':>9}{'pre.':>9}")
            for r in rs:
                m = r["metrics"]
                lines.append(f"{_label(r):<14}{_params(r):>14}{m['accuracy']:>9.4f}"
                             f"{m['macro_recall']:>9.4f}{m['macro_precision']:>9.4f}")
        lines.append("")
    return "\n".join(lines)


def _label(r: dict) -> str:
    name = model_info(r["source"]).label
    return f"{name}({r['backbone']})" if r["source"] == "fm" and r.get("backbone") and "/" not in r["backbone"] else name


def _params(r: dict) -> str:
    return f"{r['trainable_params'] / 1e6:.3f}M"
