"""`fm4npp pretrain`: one pretraining run (the same code path the studies use)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the foundation model on a data set (Ray Train + MLflow)",
        description="Pretrain one model; rerunning with the same --run-name resumes it.")
    p.add_argument("--preset", help="model preset (w8 ... w128, m1 ... m6); needed without --spec")
    p.add_argument("--spec", help="start from a run's spec (run_spec.json, an artifact of every "
                   "MLflow run; fm4npp.spec): its pretrain section, then the flags and --set on top")
    p.add_argument("--data", default="", help="data set directory (Parquet + manifest.json, "
                   "bins.json), or a mixture NAME=PATH:WEIGHT,... (e.g. sphenix=D1:0.5,aleph=D2:0.5; "
                   "each PATH with its own bins.json; see fm4npp.data.mixture); default: the "
                   "default data set, simulated into the data home once")
    p.add_argument("--objective", help="pretraining objective: knn (the paper's, default), "
                   "knn_energy, masked, hybrid; supervised (a labelled reference, not a "
                   "pretraining claim); see fm4npp.pretrain.objectives")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--workers", type=int, help="Ray Train workers (DDP ranks)")
    p.add_argument("--run-name", help="stable run name: the resume key (default: config hash)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any PretrainConfig field, repeatable (e.g. --set lr=1e-3)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--storage", help="storage root for run dirs, checkpoints and MLflow "
                   "artifacts (default $FM4NPP_STORAGE, else the data home's runs/)")
    p.add_argument("--skip-validation", action="store_true",
                   help="do not check the data set (manifest, hashes, schema, labels, values, "
                        "empty events) or that the bins were fitted on it; a missing data "
                        "directory or bins still refuse")
    p.set_defaults(func=handler)


def _base(args: argparse.Namespace):
    """The config the flags override: a spec's pretrain section, else the defaults (and the
    default data set when no --data is given)."""
    from fm4npp.pretrain.config import PretrainConfig

    if args.spec:
        from fm4npp.spec import read

        spec = read(args.spec)
        if spec.pretrain is None:
            raise ValueError(f"{args.spec}: the spec has no pretrain section")
        return spec.pretrain
    if not args.preset:
        raise ValueError("give --preset (or --spec)")
    if not args.data:
        from fm4npp.pretrain.default_data import ensure_default_dataset

        args.data = str(ensure_default_dataset())
    return PretrainConfig()


def config_from_args(args: argparse.Namespace):
    """The resolved run config of the command line. From a spec unchanged, the run keeps its
    name (rerunning resumes it); changed, it is a new run named by its own config hash."""
    base = _base(args)
    flags = {"preset": args.preset, "data": args.data or None, "steps": args.steps,
             "workers": args.workers, "run_name": args.run_name,
             "storage_path": args.storage, "objective": args.objective}
    cfg = base.replace(**{k: v for k, v in flags.items() if v is not None}).with_overrides(args.set)
    if args.spec and not args.run_name and cfg.replace(storage_path=base.storage_path) != base:
        cfg = cfg.replace(run_name="")
    return cfg.resolved()


def handler(args: argparse.Namespace) -> int:
    from fm4npp import runs

    try:
        cfg = config_from_args(args)
    except (KeyError, ValueError) as exc:
        print(f"fm4npp pretrain: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2

    from fm4npp.data.errors import DataError
    from fm4npp.pretrain.run import RefusedError, check_inputs, run_pretraining

    try:
        check_inputs(cfg, args.skip_validation)  # before Ray starts: bad input fails in seconds
    except RefusedError as exc:
        print(f"fm4npp pretrain: refused: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"fm4npp pretrain: {exc.one_line()}", file=sys.stderr)
        return 2

    import ray

    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False,
                 runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": runs.tracking_uri()}})
    # where fm4npp.cli.main puts the traceback of a bad file met inside a Ray worker
    args.error_log = str(Path(cfg.storage_path) / cfg.run_name / "fm4npp_error.log")
    try:
        result = run_pretraining(cfg, skip_validation=args.skip_validation)
    except RefusedError as exc:
        print(f"fm4npp pretrain: refused: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1, default=str))
    print(runs.describe(result["mlflow_run_id"], result["experiment"]))
    return 0
