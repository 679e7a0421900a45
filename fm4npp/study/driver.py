"""Run (or resume) a scaling study: a Ray Tune grid of pretraining trials, one MLflow parent.

A study is a Ray Tune grid over "points" (model width; data fraction; step budget) x seeds.
Each Tune trial is a small driver function (a fraction of a CPU, fm4npp/study/trial.py) that
runs one pretraining run through `fm4npp.pretrain.run.run_pretraining`, i.e. builds a Ray
Train TorchTrainer whose RunConfig carries a `TuneReportCallback` (the Ray Train V2 way to put
Train under Tune).

Resume: the Tune experiment lives at `<storage>/<study name>` and every trial's Ray Train run
at `<storage>/<study name>/train/<trial key>`, with no timestamps in any name. Starting a
study whose experiment exists restores it (`Tuner.restore`): finished trials are kept, the
others restart, and a restarted trial's Train run resumes from its own last checkpoint.

MLflow: one parent run per study (its stable name is the study name) and one child run per
trial (tag `mlflow.parentRunId`, run name = trial key), all in experiment `fm4npp-scaling`,
tagged `study`, `axis.*`, `seed`, `N`, `D`, `C`, `val_mse`. The tracking URI must be absolute
(MLFLOW_TRACKING_URI, else the data home's database; `ray job submit` runs us from a copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from fm4npp.study.presets import (
    EXPERIMENT, PRESETS, StudyPreset, grid_points, max_concurrent, trial_key, with_objectives,
)
from fm4npp.overrides import parse_pairs
from fm4npp.study.trial import DEFAULT_TRAINER, run_trial

def study_name(kind: str, preset_name: str) -> str:
    return f"{kind}-{preset_name}"


def resolve_data(data: str) -> Path:
    """The study's data set: ``data``, else the default data set (simulated on first use)."""
    if not data:
        from fm4npp.pretrain.default_data import ensure_default_dataset

        data = str(ensure_default_dataset())
    data_dir = Path(data).expanduser().resolve()
    from fm4npp.data.shards import MANIFEST

    if not (data_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"{data_dir}: not a data set (no {MANIFEST}); make one with "
                                f"`fm4npp simulate` or `fm4npp data convert`, or leave --data "
                                f"out to use the default data set")
    if not (data_dir / "bins.json").is_file():
        raise FileNotFoundError(f"{data_dir / 'bins.json'}: no serialization bins; fit them with "
                                f"`fm4npp serialize fit {data_dir} --out {data_dir / 'bins.json'}`")
    return data_dir


def run_study(kind: str, preset_name: str, data: str, storage: str, name: str = "",
              max_concurrent_trials: int = 0, seeds: tuple[int, ...] | None = None,
              objectives: tuple[str, ...] = (),
              trainer: str = DEFAULT_TRAINER, overrides: dict | None = None) -> dict:
    """Run (or resume) one scaling study on the Ray cluster `ray.init()` connects to.

    Returns {"name", "path", "parent_run_id", "trials": [{key, status, val_mse, ...}]}.
    """
    if preset_name not in PRESETS:
        raise KeyError(f"unknown study preset {preset_name!r}; one of {sorted(PRESETS)}")
    preset = PRESETS[preset_name]
    if seeds:
        preset = dataclasses.replace(preset, seeds=tuple(seeds))
    points = with_objectives(grid_points(kind, preset), objectives)
    return run_grid(name or study_name(kind, preset_name), kind, preset_name, preset, points,
                    resolve_data(data), storage, max_concurrent_trials, trainer, overrides)


def run_grid(name: str, kind: str, preset_name: str, preset: StudyPreset, points: list[dict],
             data_dir: Path, storage: str, max_concurrent_trials: int = 0,
             trainer: str = DEFAULT_TRAINER, overrides: dict | None = None) -> dict:
    """A Ray Tune grid of pretraining trials (``points`` x the preset's seeds) under one MLflow
    parent run ``name``; resumes the Tune experiment ``<storage>/<name>`` if it exists."""
    import ray
    from ray import tune

    from fm4npp import runs

    from fm4npp.paths import storage_root

    storage_dir = storage_root(storage or None)
    storage_dir.mkdir(parents=True, exist_ok=True)
    uri = runs.tracking_uri()  # passed to every trial: one database for the whole study
    print(f"[study] {name}: MLflow {uri}  storage {storage_dir / name}", flush=True)

    if not ray.is_initialized():
        ray.init()  # bare: joins RAY_ADDRESS / the job's cluster; never num_cpus here
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
        "parent_run_id": parent_id, "trainer": trainer,
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
            "failed": failed, "train_storage": study_consts["train_storage"]}


def comma_list(s: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ("a", "b", "c")."""
    return tuple(x.strip() for x in s.split(",") if x.strip())


def run_reported(call, render, hint: str) -> int:
    """A study CLI's ending: ``call()``'s result rendered, then ``hint`` (formatted with the
    result: how to redraw it); a refusal (missing data, unknown names, bad values) is one
    ``error:`` line and exit status 2."""
    try:
        res = call()
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(res))
    print(hint.format(**res))
    return 0


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
    p.add_argument("--objectives", default="", help="comma-separated pretraining objectives as "
                   "one more grid axis, e.g. knn,masked (default: the config's objective only)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="PretrainConfig overrides for every trial, e.g. lr=1e-3")
    p.add_argument("--trainer", default=DEFAULT_TRAINER, metavar="MODULE:FUNCTION",
                   help="the function that trains one trial (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        overrides = parse_pairs(args.set)
    except ValueError as exc:
        p.error(str(exc))
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip()) or None
    try:
        out = run_study(kind, args.preset, args.data, args.storage, name=args.name,
                        max_concurrent_trials=args.max_concurrent, seeds=seeds,
                        trainer=args.trainer, overrides=overrides,
                        objectives=comma_list(args.objectives))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if out["failed"] else 0
