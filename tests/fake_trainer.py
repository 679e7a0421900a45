"""A stand-in trainer for study tests (`--trainer tests.fake_trainer:train`): no model, a
known scaling law, a second or two per trial, the same MLflow layout and result keys as
fm4npp.pretrain.run.run_pretraining. It leaves a marker file per trial start and finish in
``<train storage>/markers`` so a test can count reruns after a resume.

The trial processes import it: the test cluster has the repository on PYTHONPATH, a
--working-dir job has it as its working directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

LAW = "L = 0.05 + 2 (N/1e3)^-0.3 + 0.5 (D/1e4)^-0.2"


def _mark(cfg, event: str) -> None:
    d = Path(cfg.storage_path) / "markers"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{event}-{cfg.run_name}.{os.getpid()}.{time.time_ns()}").touch()


def train(cfg, callbacks=(), parent_run_id=None, tags=None) -> dict:
    from fm4npp import runs
    from fm4npp.model.presets import PRESETS

    _mark(cfg, "start")
    width = PRESETS[cfg.preset].d_model
    n = 4.0 * width**2 + 100 * width
    d = 2e4 * cfg.data_fraction * cfg.steps
    run_id, _ = runs.get_or_start_run(cfg.run_name, {"steps": cfg.steps, "preset": cfg.preset},
                                      tags, parent_run_id, cfg.experiment)
    seconds = float(os.environ.get("FM4NPP_FAKE_TRIAL_SECONDS", "1"))
    for i in range(1, 5):
        time.sleep(seconds / 4)
        val = 0.05 + 2.0 * (n / 1e3) ** -0.3 + 0.5 * (d * i / 4 / 1e4) ** -0.2
        runs.log_metrics(run_id, {"val_mse": val, "val_baseline_mse": 5.0,
                                  "flops_C": 6.0 * n * d * i / 4}, step=int(cfg.steps * i / 4))
    runs.end_run(run_id, "FINISHED")
    _mark(cfg, "done")
    return {"val_mse": val, "N": n, "D": d, "D_set": d, "C": 6.0 * n * d, "steps": cfg.steps,
            "mlflow_run_id": run_id, "run_name": cfg.run_name}
