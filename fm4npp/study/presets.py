"""Study presets (how big a study is, what each trial may use) and the grid they span.

Plain data and arithmetic: no Ray, no MLflow, no torch (the tests and the analysis read them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

EXPERIMENT = "fm4npp-scaling"
KINDS = ("model_scaling", "data_scaling", "compute_scaling")
PAPER_FRACTIONS = (0.01, 0.024, 0.116, 0.2, 0.476, 1.0)  # data scaling, Figure 5(b)
PAPER_BUDGETS = (0.25, 0.5, 1.0)  # compute scaling, Figure 5(c)
# grid-point keys that are PretrainConfig fields as they stand (the objectives study's axes)
POINT_CONFIG_FIELDS = ("objective", "mask_fraction", "bidirectional")


@dataclass(frozen=True)
class StudyPreset:
    """How big a study is and what each trial may use. One per machine class."""

    widths: tuple[str, ...]  # model presets (fm4npp.model.presets) of the model/compute grids
    steps: dict  # full step budget per width (each run's cosine schedule ends at its steps)
    data_width: str  # the model of the data-scaling study (m3 in the paper)
    batch_size: int  # global batch, events
    fractions: tuple[float, ...] = PAPER_FRACTIONS
    budgets: tuple[float, ...] = PAPER_BUDGETS
    full_only: tuple[str, ...] = ()  # widths the compute study trains at 100 % only
    seeds: tuple[int, ...] = (0,)
    workers: dict = field(default_factory=dict)  # Ray Train workers per width (default 1)
    use_gpu: bool = False
    cpus_per_worker: float = 0.5  # fractional: Tune drivers and Ray Data need CPU too
    trial_cpus: float = 0.25  # the Tune trial driver only waits on its TorchTrainer
    data_cpus: float = 0.25  # the serialization task of each trial's Ray Data pipeline
    pretrain: dict = field(default_factory=dict)  # further PretrainConfig fields

    def workers_for(self, width: str) -> int:
        return int(self.workers.get(width, 1))

    def trial_demand(self, width: str) -> dict:
        """CPU/GPU one running trial holds (driver + Train workers + data actor)."""
        w = self.workers_for(width)
        return {"CPU": self.trial_cpus + w * self.cpus_per_worker + self.data_cpus,
                "GPU": float(w) if self.use_gpu else 0.0}


PRESETS: dict[str, StudyPreset] = {
    # `make demo`, CI and the no-flag default: a scaling law in minutes on 2 cores. Measured
    # here on the 600-event default data set: 200 steps bring every width w16-w64 and every
    # data fraction >= 0.1 to val MSE 0.62-0.67 of the constant predictor (w8: 1.24, worse than
    # it; fraction 0.05: 0.72), each run about a minute.
    "smoke": StudyPreset(
        widths=("w16", "w24", "w32", "w64"),
        steps={"w16": 200, "w24": 200, "w32": 200, "w64": 200}, data_width="w32",
        batch_size=8, fractions=(0.1, 0.2, 0.4, 1.0), budgets=(0.5, 1.0),
        pretrain=dict(val_every=25, ckpt_every=100, log_every=10, val_events=64,
                      max_points=512, lr=3e-3),
    ),
    # A laptop study: >= 1 decade of parameters (w8 4.5k ... w64 119k), tens of minutes.
    "cpu": StudyPreset(
        widths=("w8", "w16", "w32", "w64"),
        steps={"w8": 300, "w16": 300, "w32": 300, "w64": 300}, data_width="w32",
        batch_size=8, seeds=(0,),
        pretrain=dict(val_every=100, ckpt_every=100, log_every=20, val_events=64,
                      max_points=512, lr=3e-3),
    ),
    # The paper (Table 1, appendix B): m1, m2 50k steps, m3-m6 100k, batch 256, lr 2e-4
    # (muP transfers it), one GPU per worker; m4-m6 only at full budget in compute scaling.
    "paper": StudyPreset(
        widths=("m1", "m2", "m3", "m4", "m5", "m6"),
        steps={"m1": 50_000, "m2": 50_000, "m3": 100_000, "m4": 100_000, "m5": 100_000,
               "m6": 100_000},
        data_width="m3", batch_size=256, full_only=("m4", "m5", "m6"),
        workers={"m1": 1, "m2": 1, "m3": 4, "m4": 8, "m5": 24, "m6": 64},
        use_gpu=True, cpus_per_worker=4.0, trial_cpus=0.25, data_cpus=1.0,
        pretrain=dict(lr=2e-4, val_every=2000, ckpt_every=2000, log_every=100,
                      val_events=2048),
    ),
}


def grid_points(kind: str, preset: StudyPreset) -> list[dict]:
    """The study's axis values, one dict per grid cell (seeds are a second grid axis)."""
    if kind == "model_scaling":
        return [{"width": w} for w in preset.widths]
    if kind == "data_scaling":
        return [{"width": preset.data_width, "fraction": f} for f in preset.fractions]
    if kind == "compute_scaling":
        return [{"width": w, "budget": b} for w in preset.widths for b in preset.budgets
                if b == 1.0 or w not in preset.full_only]
    raise ValueError(f"unknown study kind {kind!r}; one of {KINDS}")


def trial_steps(point: dict, preset: StudyPreset) -> int:
    """Optimizer steps of a grid cell: its width's budget times the cell's budget share."""
    return max(1, int(round(int(preset.steps[point["width"]]) * point.get("budget", 1.0))))


def trial_key(point: dict, seed: int, preset: StudyPreset) -> str:
    """Stable, readable name of a grid cell, e.g. ``w32-d100-s400`` (width, percent of the
    training data, steps; ``-seed1`` for seeds other than 0): the resume key of its Train
    run and the name of its MLflow run."""
    key = f"{point['width']}-d{100 * point.get('fraction', 1.0):g}-s{trial_steps(point, preset)}"
    if "objective" in point:  # an objective axis (--objectives): one more part of the name
        key += f"-{point['objective']}"
    if "mask_fraction" in point:  # e.g. -m60: 60 % of the points hidden
        key += f"-m{100 * point['mask_fraction']:g}"
    if point.get("bidirectional"):
        key += "-bi"
    if "domain" in point:  # the transfer study: the pretraining data (a data set or a mixture)
        key += f"-{point['domain']}"
    return key if int(seed) == 0 else f"{key}-seed{int(seed)}"


def with_objectives(points: list[dict], objectives) -> list[dict]:
    """The grid times an objective axis (``--objectives knn,masked``); unchanged without one."""
    if not objectives:
        return points
    return [{**p, "objective": o} for p in points for o in objectives]


def trial_overrides(point: dict, seed: int, preset: StudyPreset) -> dict:
    """PretrainConfig fields of one trial (on top of the study's base config)."""
    width = point["width"]
    return {
        "preset": width,
        "steps": trial_steps(point, preset),
        "seed": int(seed),
        "data_fraction": float(point.get("fraction", 1.0)),
        "workers": preset.workers_for(width),
        "use_gpu": preset.use_gpu,
        "cpus_per_worker": preset.cpus_per_worker,
        **{k: point[k] for k in POINT_CONFIG_FIELDS if k in point},
        **({"data": point["data"]} if "data" in point else {}),  # a point's own data (transfer)
    }


def max_concurrent(preset: StudyPreset, points: list[dict], resources: dict) -> int:
    """How many trials fit the cluster at once: the largest trial's demand against what
    `ray.cluster_resources()` reports (an autoscaling cluster may grow beyond it; pass
    --max-concurrent there)."""
    n = math.inf
    for p in points:
        need = preset.trial_demand(p["width"])
        for res in ("CPU", "GPU"):
            if need[res] > 0:
                n = min(n, math.floor(resources.get(res, 0.0) / need[res] + 1e-9))
    return max(1, int(n)) if n != math.inf else 1
