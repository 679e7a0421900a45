"""Per-point classification metrics for PID (5 classes) and noise tagging (2 classes).

Accuracy, macro-averaged recall and precision (the paper's Table 2) and the per-class tables
(Tables 3, 4), pooled over all test points. Points with label ``-1`` are padding and are dropped.
A class that is never predicted has precision 0 (sklearn's zero_division=0), so a classifier that
ignores a rare class pays for it in the macro precision, as in the paper's tables.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PID_NAMES = ["other", "pion", "kaon", "proton", "electron"]
NOISE_NAMES = ["non-noise", "noise"]
ELECTRON_NAMES = ["other", "scattered electron"]  # the ep DIS electron tagger's classes


def _flatten(y) -> np.ndarray:
    if isinstance(y, (list, tuple)):
        return np.concatenate([np.asarray(a).ravel() for a in y]) if len(y) else np.zeros(0, np.int64)
    return np.asarray(y).ravel()


def classification_metrics(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """``y_true``/``y_pred``: arrays (or lists of per-event arrays) of class indices.

    Returns accuracy, macro_recall, macro_precision, n_points, and ``per_class``:
    {name: {recall, precision, support, predicted}}.
    """
    from sklearn.metrics import precision_recall_fscore_support

    t = _flatten(y_true).astype(np.int64)
    p = _flatten(y_pred).astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    keep = t >= 0
    t, p = t[keep], p[keep]
    n_cls = len(class_names)
    if t.size and (t.max() >= n_cls or p.min() < 0 or p.max() >= n_cls):
        raise ValueError(f"labels outside 0..{n_cls - 1}: true {t.min()}..{t.max()}, pred {p.min()}..{p.max()}")
    labels = list(range(n_cls))
    if t.size == 0:
        nan = float("nan")
        return {"accuracy": nan, "macro_recall": nan, "macro_precision": nan, "n_points": 0, "per_class": {}}
    prec, rec, _, support = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    predicted = np.bincount(p, minlength=n_cls)
    per_class = {
        name: {
            "recall": float(rec[c]),
            "precision": float(prec[c]),
            "support": int(support[c]),
            "predicted": int(predicted[c]),
        }
        for c, name in enumerate(class_names)
    }
    # Macro over classes present in the truth: an absent class has no defined recall.
    present = support > 0
    return {
        "accuracy": float((t == p).mean()),
        "macro_recall": float(rec[present].mean()),
        "macro_precision": float(prec[present].mean()),
        "n_points": int(t.size),
        "per_class": per_class,
    }


def tag_metrics(y_true, y_pred, class_names: Sequence[str] = ELECTRON_NAMES) -> dict:
    """Hit-level tagging of class 1 (the scattered electron): ``classification_metrics`` plus
    efficiency (tagged / true hits of the class), purity (true / tagged) and their F1, pooled
    over all points. With nothing to tag or nothing tagged, the undefined ratio is 0."""
    out = classification_metrics(y_true, y_pred, class_names)
    t = _flatten(y_true).astype(np.int64)
    p = _flatten(y_pred).astype(np.int64)[t >= 0]
    t = t[t >= 0]
    tp = int(((t == 1) & (p == 1)).sum())
    n_true, n_tagged = int((t == 1).sum()), int((p == 1).sum())
    eff = tp / n_true if n_true else 0.0
    pur = tp / n_tagged if n_tagged else 0.0
    out.update(efficiency=eff, purity=pur, f1=2 * eff * pur / (eff + pur) if eff + pur > 0 else 0.0,
               n_tagged=n_tagged, n_true=n_true)
    return out


def format_per_class_table(metrics: dict, title: str = "") -> str:
    """A Table-3/4-style text table: accuracy, macro and per-class recall/precision."""
    names = list(metrics["per_class"])
    head = ["acc", "macro rec", "macro pre"] + [f"{n} rec/pre" for n in names]
    row = [f"{metrics['accuracy']:.4f}", f"{metrics['macro_recall']:.4f}", f"{metrics['macro_precision']:.4f}"]
    row += [f"{metrics['per_class'][n]['recall']:.4f}/{metrics['per_class'][n]['precision']:.4f}" for n in names]
    widths = [max(len(h), len(r)) for h, r in zip(head, row)]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join(r.ljust(w) for r, w in zip(row, widths)))
    return "\n".join(lines)
