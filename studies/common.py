"""What the three scaling studies share: presets, the trial driver, the Tuner, MLflow runs.

A study is a Ray Tune grid over "points" (model width; data fraction; step budget) x seeds.
Each Tune trial is a small driver function (a fraction of a CPU) that runs one pretraining
run through `fm4npp.pretrain.run.run_pretraining`, i.e. builds a Ray Train TorchTrainer whose
RunConfig carries a `TuneReportCallback` (the Ray Train V2 way to put Train under Tune).

Resume: the Tune experiment lives at `<storage>/<study name>` and every trial's Ray Train run
at `<storage>/<study name>/train/train-<trial key>`, with no timestamps in any name. Starting a
study whose experiment exists restores it (`Tuner.restore`): finished trials are kept, the
others restart, and a restarted trial's Train run resumes from its own last checkpoint.

MLflow: one parent run per study (its stable name is the study name) and one child run per
trial (tag `mlflow.parentRunId`), all in experiment `fm4npp-scaling`, tagged `study`,
`axis.*`, `seed`, `N`, `D`, `C`, `val_mse`. The tracking URI must be absolute (set
MLFLOW_TRACKING_URI; `ray job submit` runs us from a temporary copy of the repo).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

EXPERIMENT = "fm4npp-scaling"
KINDS = ("model_scaling", "data_scaling", "compute_scaling")
PAPER_FRACTIONS = (0.01, 0.024, 0.116, 0.2, 0.476, 1.0)  # data scaling, Figure 5(b)
PAPER_BUDGETS = (0.25, 0.5, 1.0)  # compute scaling, Figure 5(c)


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
    data_cpus: float = 0.25  # the serialization actor of each trial's Ray Data pipeline
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


# ----------------------------------------------------------------------------- the grid
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
    return key if int(seed) == 0 else f"{key}-seed{int(seed)}"


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


# ----------------------------------------------------------------------------- one trial
def _mark(marker_dir: str, name: str) -> None:
    """Testing aid: a file per event (trial start/finish), to count reruns after a resume."""
    if marker_dir:
        d = Path(marker_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.{os.getpid()}.{time.time_ns()}").touch()


def _fake_pretraining(cfg, parent_run_id: str, tags: dict) -> dict:
    """A stand-in for `run_pretraining` (testing aid, `--fake`): no model, a known scaling
    law L = 0.05 + 2 (N/1e3)^-0.3 + 0.5 (D/1e4)^-0.2, a few seconds, the same MLflow layout."""
    import ray.tune

    from fm4npp import runs
    from fm4npp.model.presets import PRESETS as MODEL_PRESETS

    width = MODEL_PRESETS[cfg.preset].d_model
    n = 4.0 * width**2 + 100 * width
    d = 2e4 * cfg.data_fraction * cfg.steps
    c = 6.0 * n * d
    run_id, _ = runs.get_or_start_run(cfg.run_name, {"steps": cfg.steps, "preset": cfg.preset},
                                      tags, parent_run_id, cfg.experiment)
    seconds = float(os.environ.get("FM4NPP_FAKE_TRIAL_SECONDS", "2"))
    for i in range(1, 5):
        time.sleep(seconds / 4)
        frac = i / 4
        val = 0.05 + 2.0 * (n / 1e3) ** -0.3 + 0.5 * (d * frac / 1e4) ** -0.2
        metrics = {"step": int(cfg.steps * frac), "val_mse": val, "params_N": n,
                   "spacepoints_D": d * frac, "flops_C": c * frac}
        runs.log_metrics(run_id, metrics, step=metrics["step"])
        ray.tune.report(metrics)
    runs.end_run(run_id, "FINISHED")
    return {"val_mse": val, "N": n, "D": d, "C": c, "steps": cfg.steps, "mlflow_run_id": run_id,
            "run_name": cfg.run_name}


def train_set_spacepoints(cfg) -> int:
    """Spacepoints in a run's training set: the train split at its data fraction, after the
    serialization point cap. Figure 5(b)'s x: with a fixed step budget the spacepoints a run
    consumes are the same for every fraction; the data it can learn from is not."""
    import numpy as np
    import pyarrow.compute as pc

    from fm4npp.data.io import iter_tables
    from fm4npp.data.pipeline import keep_mask
    from fm4npp.pretrain.run import pipeline_config

    from fm4npp.serialize.bins import load_bins

    pcfg = pipeline_config(cfg, load_bins(cfg.bins))
    cap, policy = pcfg.serialize.max_points, pcfg.serialize.cap_policy
    total = 0
    for _, _, table in iter_tables(cfg.data, ["event_id", "hit_x"], check=False, empty="keep"):
        mask = keep_mask(table.column("event_id").to_numpy(), "train", pcfg)
        n = pc.fill_null(pc.list_value_length(table.column("hit_x")), 0).to_numpy()[mask]
        n = n[n >= 2]
        if cap:
            n = n[n <= cap] if policy == "drop" else np.minimum(n, cap)
        total += int(n.sum())
    return total


def trial_params(cfg, point: dict, seed: int, result: dict) -> dict:
    """What a reader of the MLflow runs table compares trials by (beside the full config)."""
    from fm4npp.model.presets import get_preset

    model = get_preset(cfg.preset, **({"n_layers": cfg.n_layers} if cfg.n_layers else {}))
    return {"width": model.d_model, "layers": model.n_layers, "N": int(result["N"]),
            "D": int(result["D"]), "steps": int(cfg.steps), "seed": int(seed),
            "data_fraction": float(point.get("fraction", 1.0))}


def run_trial(config: dict) -> None:
    """The Tune trial: one pretraining run of one grid cell, reported back to Tune.

    `config` holds the grid values ("point", "seed") and the study constants ("study"),
    all plain data so the Tune experiment state can be restored from disk.
    """
    import ray.tune

    from fm4npp import runs
    from fm4npp.pretrain.config import PretrainConfig

    s = config["study"]
    preset = StudyPreset(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in s["preset"].items()})
    point, seed = config["point"], int(config["seed"])
    key = trial_key(point, seed, preset)
    os.environ["MLFLOW_TRACKING_URI"] = s["tracking_uri"]  # one database for the whole study
    _mark(s.get("marker_dir", ""), f"start-{key}")

    cfg = PretrainConfig.from_dict({**s["base_config"], **trial_overrides(point, seed, preset),
                                    "run_name": key,
                                    "storage_path": s["train_storage"],
                                    "experiment": EXPERIMENT})
    tags = {"study": s["name"], "study.kind": s["kind"], "study.preset": s["preset_name"],
            "trial_key": key, "seed": str(seed), "model": point["width"],
            **{f"axis.{k}": str(v) for k, v in point.items()}}
    if s.get("fake"):
        result = _fake_pretraining(cfg, s["parent_run_id"], tags)
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        from fm4npp.pretrain.run import run_pretraining

        result = run_pretraining(cfg, callbacks=[TuneReportCallback()],
                                 parent_run_id=s["parent_run_id"], tags=tags)
    try:
        d_set = result["D"] if s.get("fake") else train_set_spacepoints(cfg.resolved())
    except Exception as exc:  # a secondary number: never fail a trained trial over it
        print(f"[trial {key}] training-set size unknown ({exc!r}); Figure 5(b) will use the "
              f"spacepoints consumed", flush=True)
        d_set = 0

    if d_set:
        runs.log_metrics(result["mlflow_run_id"], {"train_set_spacepoints": d_set}, step=0)
    runs.log_params(result["mlflow_run_id"], trial_params(cfg, point, seed, result))
    # the numbers the analysis reads, also as tags (searchable, shown in the runs table)
    c = runs.client()
    summary = {"N": result.get("N"), "D": result.get("D"), "C": result.get("C"),
               "val_mse": result.get("val_mse"), "D_set": d_set or None}
    for k, v in summary.items():
        if v is not None:
            c.set_tag(result["mlflow_run_id"], k, repr(float(v)))
    _mark(s.get("marker_dir", ""), f"done-{key}")
    ray.tune.report({**{k: float(v) for k, v in summary.items() if v is not None},
                     "trial_done": 1, "mlflow_run_id": result["mlflow_run_id"]})


# ----------------------------------------------------------------------------- the study
def study_name(kind: str, preset_name: str) -> str:
    return f"{kind}-{preset_name}"


def run_study(kind: str, preset_name: str, data: str, storage: str, name: str = "",
              max_concurrent_trials: int = 0, seeds: tuple[int, ...] | None = None,
              fake: bool = False, marker_dir: str = "", overrides: dict | None = None) -> dict:
    """Run (or resume) one study on the Ray cluster `ray.init()` connects to.

    Returns {"name", "path", "parent_run_id", "trials": [{key, status, val_mse, ...}]}.
    """
    import ray
    from ray import tune

    from fm4npp import runs

    if preset_name not in PRESETS:
        raise KeyError(f"unknown study preset {preset_name!r}; one of {sorted(PRESETS)}")
    preset = PRESETS[preset_name]
    if seeds:
        preset = dataclasses.replace(preset, seeds=tuple(seeds))
    name = name or study_name(kind, preset_name)
    if not data:
        from fm4npp.pretrain.default_data import ensure_default_dataset

        data = str(ensure_default_dataset())
    data_dir = Path(data).expanduser().resolve()
    from fm4npp.data.shards import MANIFEST

    if not (data_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"{data_dir}: not a data set (no {MANIFEST}); make one with "
                                f"`fm4npp simulate` or `fm4npp data convert`, or leave --data "
                                f"out to use the default data set")
    if not fake and not (data_dir / "bins.json").is_file():
        raise FileNotFoundError(f"{data_dir / 'bins.json'}: no serialization bins; fit them with "
                                f"`fm4npp serialize fit {data_dir} --out {data_dir / 'bins.json'}`")
    from fm4npp.paths import storage_root

    storage_dir = storage_root(storage or None)
    storage_dir.mkdir(parents=True, exist_ok=True)
    uri = runs.tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    print(f"[study] {name}: MLflow {uri}  storage {storage_dir / name}", flush=True)

    if not ray.is_initialized():
        ray.init()  # bare: joins RAY_ADDRESS / the job's cluster; never num_cpus here
    points = grid_points(kind, preset)
    resources = ray.cluster_resources()
    conc = max_concurrent_trials or max_concurrent(preset, points, resources)
    print(f"[study] {len(points)} grid cells x {len(preset.seeds)} seeds; cluster "
          f"{ {k: v for k, v in resources.items() if k in ('CPU', 'GPU')} }; "
          f"{conc} trial(s) at a time", flush=True)

    base = {"data": str(data_dir), "batch_size": preset.batch_size, **preset.pretrain,
            **(overrides or {})}
    parent_id, resumed = runs.get_or_start_run(
        name, params={"kind": kind, "preset": preset_name, "data": str(data_dir),
                      "grid": json.dumps(points), "seeds": json.dumps(list(preset.seeds)),
                      "base_config": json.dumps(base, sort_keys=True)},
        tags={"study": name, "study.kind": kind, "study.preset": preset_name,
              "fm4npp.study_parent": "1"},
        experiment=EXPERIMENT, storage=storage_dir)
    study_consts = {
        "name": name, "kind": kind, "preset_name": preset_name,
        "preset": dataclasses.asdict(preset), "base_config": base,
        "train_storage": str(storage_dir / name / "train"), "tracking_uri": uri,
        "parent_run_id": parent_id, "marker_dir": marker_dir, "fake": bool(fake),
    }
    trainable = tune.with_resources(run_trial, {"cpu": preset.trial_cpus})
    path = storage_dir / name
    if tune.Tuner.can_restore(str(path)):
        print(f"[study] resuming {path} (finished trials are kept)", flush=True)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search(points),
                         "seed": tune.grid_search(list(preset.seeds)),
                         "study": study_consts},
            tune_config=tune.TuneConfig(max_concurrent_trials=conc),
            run_config=tune.RunConfig(name=name, storage_path=str(storage_dir),
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      verbose=1),
        )
    try:
        grid = tuner.fit()
    except BaseException:
        runs.end_run(parent_id, "FAILED")
        raise
    trials = []
    for r in grid:
        cfg = r.config or {}
        key = trial_key(cfg["point"], cfg["seed"], preset) if "point" in cfg else "?"
        m = r.metrics or {}
        trials.append({"key": key, "ok": r.error is None and bool(m.get("trial_done")),
                       **{k: m.get(k) for k in ("val_mse", "N", "D", "C", "mlflow_run_id")},
                       "error": str(r.error)[:500] if r.error else None})
    failed = [t["key"] for t in trials if not t["ok"]]
    c = runs.client()
    c.set_tag(parent_id, "trials_finished", str(len(trials) - len(failed)))
    runs.log_dict(parent_id, {"trials": trials}, "study_trials.json")
    runs.end_run(parent_id, "FAILED" if failed else "FINISHED")
    for t in sorted(trials, key=lambda t: t["key"]):
        print(f"[study] {t['key']:>24}  val_mse={t['val_mse']}  N={t['N']}  "
              f"{'ok' if t['ok'] else 'FAILED: ' + str(t['error'])}", flush=True)
    print(f"[study] {name}: {len(trials) - len(failed)}/{len(trials)} trials finished; "
          f"view with: {runs.ui_command()}", flush=True)
    return {"name": name, "path": str(path), "parent_run_id": parent_id, "trials": trials,
            "failed": failed}


def main(kind: str, argv: list[str] | None = None) -> int:
    doc = {"model_scaling": "Figure 5(a): validation MSE vs model size (a grid over width).",
           "data_scaling": "Figure 5(b): validation MSE vs training spacepoints (data fractions).",
           "compute_scaling": "Figure 5(c): validation MSE vs FLOPs (every width at 25/50/100 % "
                              "of its step budget)."}[kind]
    p = argparse.ArgumentParser(prog=f"studies/{kind}.py", description=doc)
    p.add_argument("--preset", default="smoke", choices=sorted(PRESETS),
                   help="study size and per-trial resources (default: smoke)")
    p.add_argument("--data", default="",
                   help="data set directory (Parquet shards, manifest.json, bins.json); default: "
                        "the default data set, simulated into the data home on first use")
    p.add_argument("--storage", default="",
                   help="storage root for Tune/Train run dirs and MLflow artifacts: shared "
                        "storage on a multi-node cluster (default $FM4NPP_STORAGE, else "
                        "~/.fm4npp/runs or $FM4NPP_HOME/runs)")
    p.add_argument("--name", default="", help="study name (default <kind>-<preset>); the "
                   "resume key of the study and its MLflow parent run")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="trials at once (default: what the cluster's resources allow)")
    p.add_argument("--seeds", default="", help="comma-separated seeds (default: the preset's)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="PretrainConfig overrides for every trial, e.g. lr=1e-3")
    p.add_argument("--fake", action="store_true",
                   help="testing: replace training by a few-second stand-in with a known law")
    p.add_argument("--marker-dir", default=os.environ.get("FM4NPP_STUDY_MARKER_DIR", ""),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    overrides = {}
    for pair in args.set:
        if "=" not in pair:
            p.error(f"--set expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        overrides[k.strip()] = v.strip()
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip()) or None
    try:
        out = run_study(kind, args.preset, args.data, args.storage, name=args.name,
                        max_concurrent_trials=args.max_concurrent, seeds=seeds, fake=args.fake,
                        marker_dir=args.marker_dir, overrides=overrides)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if out["failed"] else 0
