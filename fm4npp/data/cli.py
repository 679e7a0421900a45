"""``fm4npp data ...``: validate, report and import event data sets (thin over the library)."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="check, describe and import event data sets")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("validate", help="list every problem of a data set directory (read-only)")
    p.add_argument("dir", help="data set directory (Parquet shards + manifest.json)")
    p.add_argument("--allow-empty", action="store_true", help="do not count events without hits as problems")
    p.set_defaults(func=_validate)

    p = sub.add_parser("report", help="physics figures (PNG) and numbers (report.json) of a data set")
    p.add_argument("dir", help="data set directory or shard")
    p.add_argument("--out", required=True, help="folder for the PNGs and report.json")
    p.add_argument("--max-events", type=int, default=None, help="use at most this many events")
    p.add_argument("--display-event", type=int, default=0, help="row (0-based) for the event display")
    p.set_defaults(func=_report)

    p = sub.add_parser("import-tpcpp", help="convert the public TPCpp-10M npz layout to Parquet")
    p.add_argument("src", help="a split dir with spacepoints.npz, or a root with labeled/<split>/")
    p.add_argument("--out", required=True, help="output data set directory (one subdir per split)")
    p.add_argument("--events-per-shard", type=int, default=1000)
    p.add_argument("--keep-empty", action="store_true", help="keep events without points")
    p.set_defaults(func=_import_tpcpp)


def _validate(args) -> int:
    from fm4npp.data.validate import validate_dataset

    problems = validate_dataset(args.dir, allow_empty=args.allow_empty)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.dir}: OK")
    return 0


def _report(args) -> int:
    from fm4npp.data.errors import DataError
    from fm4npp.data.report import make_report

    try:
        result = make_report(args.dir, args.out, max_events=args.max_events, display_event=args.display_event)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(result['figures'])} figures and report.json to {args.out}")
    for key, value in result["numbers"].items():
        expect = result["expectations"].get(key)
        print(f"  {key}: {value}" + (f"   (expected: {expect})" if expect else ""))
    return 0


def _import_tpcpp(args) -> int:
    from fm4npp.data.convert import import_tpcpp
    from fm4npp.data.errors import DataError

    try:
        manifests = import_tpcpp(args.src, args.out, events_per_shard=args.events_per_shard,
                                 skip_empty=not args.keep_empty)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for split, manifest in manifests.items():
        print(f"{split}: {manifest['counts']['events']} events, {len(manifest['files'])} shard(s)")
    return 0
