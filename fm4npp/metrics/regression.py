"""Event-level regression metrics of log10(Q2) (the ep DIS ``q2`` task).

delta = log10 Q2_pred - log10 Q2_true per test event; resolution = std(delta) (the spread a
calibration cannot remove), bias = mean(delta), frac_within_0.1 = the fraction of events with
|delta| < 0.1 (a factor 10^0.1 = 1.26 in Q2), rmse = sqrt(mean(delta^2)).
"""

from __future__ import annotations

import numpy as np

WITHIN = 0.1  # tolerance in log10 of frac_within_0.1


def log_q2_metrics(pred, true) -> dict:
    pred = np.asarray(pred, np.float64).ravel()
    true = np.asarray(true, np.float64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"{true.size} true values but {pred.size} predictions")
    if not pred.size:
        nan = float("nan")
        return {"resolution": nan, "bias": nan, "frac_within_0.1": nan, "rmse": nan, "n_events": 0}
    d = pred - true
    return {"resolution": float(d.std()), "bias": float(d.mean()),
            "frac_within_0.1": float((np.abs(d) < WITHIN).mean()), "rmse": float(np.sqrt((d * d).mean())),
            "n_events": int(d.size)}
