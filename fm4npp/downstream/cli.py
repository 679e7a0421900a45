"""`fm4npp finetune` and `fm4npp evaluate`: thin wrappers over fm4npp.downstream.train (and .tables, .adapters)."""

from __future__ import annotations

import argparse
import sys

from fm4npp.downstream.config import FEATURE_SOURCES, GNN_SIZES, MODELS, TASKS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=list(TASKS), required=True,
                   help="electron, q2: ep DIS data (eic_ep / hera_ep) only")
    p.add_argument("--backbone", default="",
                   help="pretrained FM: a run name (under the storage root), a run or checkpoint "
                        "dir, or a pretrained dir (fm4npp.model.io format)")
    p.add_argument("--data", default="", help="data set dir (Parquet shards + manifest.json)")
    p.add_argument("--bins", default="", help="serialization bins JSON (default <data>/bins.json)")
    p.add_argument("--n-train", type=int, default=0, help="labelled training events (0 = all)")
    p.add_argument("--n-test", type=int, default=0, help="test events (0 = all)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--preset", default="", help="model preset for --model scratch without --backbone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="directory for adapter weights and result JSON "
                   "(default <storage>/finetune/<run name>)")
    p.add_argument("--storage", default="", help="storage root for outputs and the feature "
                   "cache (default $FM4NPP_STORAGE, else the data home's runs/)")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment to log to (default: FinetuneConfig's)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--size", choices=sorted(GNN_SIZES), default="cpu",
                   help="sizes of the GNN baselines: cpu (the config defaults) or paper "
                        "(appendix C); --set overrides either")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any FinetuneConfig field, e.g. lr=3e-4, tracking.n_queries=64, gnn.k=50")


def _config(args, source: str):
    from fm4npp.downstream.config import FinetuneConfig

    # built as "raw" (valid for every task, needs no backbone); the real source is set last
    base = FinetuneConfig(task=args.task, source="raw", data=args.data, bins=args.bins,
                          n_train_events=args.n_train, n_test_events=args.n_test, preset=args.preset,
                          seed=args.seed, out=args.out, storage=args.storage)
    if args.no_mlflow or args.experiment is not None:
        base = base.from_dict({**base.to_dict(),
                               "experiment": "" if args.no_mlflow else args.experiment})
    cfg = base.with_overrides(GNN_SIZES[args.size] + args.set)
    d = cfg.to_dict()
    d.update(source=source, backbone=args.backbone)
    if args.epochs is not None:
        d["epochs"] = args.epochs
    return FinetuneConfig.from_dict(d)


def _finetune(args) -> int:
    from fm4npp.downstream.adapters import write_json
    from fm4npp.downstream.tables import format_table
    from fm4npp.downstream.train import finetune

    try:
        cfg = _config(args, MODELS[args.model].source if args.model else args.source)
        result = finetune(cfg)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"fm4npp finetune: error: {exc}", file=sys.stderr)
        return 2
    print(format_table([result]))
    if args.json:
        write_json(result, args.json)
    print(f"adapter and result.json written to {result['out']}")
    if result.get("mlflow_run_id"):
        from fm4npp import runs

        print(runs.describe(result["mlflow_run_id"], cfg.experiment))
    return 0


def _evaluate(args) -> int:
    from fm4npp.downstream.adapters import write_json
    from fm4npp.downstream.tables import format_table
    from fm4npp.downstream.train import compare, evaluate_adapter

    try:
        if args.adapter:
            results = [evaluate_adapter(d, data=args.data, n_events=args.n_test) for d in args.adapter]
        else:
            if not args.task or not args.data:
                raise ValueError("give --adapter DIR..., or --task and --data (and --sources) to train and compare")
            sources = [MODELS[s].source if s in MODELS else s
                       for s in (s.strip() for s in args.sources.split(",")) if s]
            if "fm" in sources and not args.backbone:
                raise ValueError("source 'fm' needs --backbone")
            base = _config(args, "fm" if "fm" in sources else sources[0])
            results = compare(base, sources)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"fm4npp evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.json:
        write_json({"results": results}, args.json)
        print(f"results written to {args.json}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("finetune", help="train a downstream model (tracking / pid / noise / electron / q2)",
                       description="Train an adapter on frozen FM features (--model fm), on raw inputs "
                                   "(adapter_only) or on a backbone trained from scratch (scratch), or "
                                   "a GNN baseline (sage, gat, gcn, graphconv: pid and noise; exatrkx: "
                                   "tracking), then score it on the test split.")
    _common(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", choices=list(MODELS), default=None, help="default fm")
    which.add_argument("--source", choices=list(FEATURE_SOURCES), default="fm",
                       help="older name of --model: fm, raw (= adapter_only), scratch")
    p.add_argument("--json", default="", help="also write the result JSON here")
    p.set_defaults(func=_finetune)

    e = sub.add_parser("evaluate", help="Table-2-style comparison of adapters on the same test events",
                       description="Either score saved adapters (--adapter DIR ...), or train the "
                                   "listed sources on the same events and print the table.")
    e.add_argument("--adapter", nargs="*", default=[], help="`finetune --out` directories to score")
    e.add_argument("--sources", default="fm,raw",
                   help=f"comma list of --model names ({', '.join(MODELS)}) or fm, raw, scratch")
    e.add_argument("--json", default="", help="write all results here")
    _common(e)
    e.set_defaults(func=_evaluate)
    # --task is required for training; with --adapter the saved config decides
    for a in e._actions:
        if a.dest == "task":
            a.required = False
            a.default = ""
