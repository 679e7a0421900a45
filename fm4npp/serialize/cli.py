"""`fm4npp serialize`: fit and inspect serialization bins files."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("serialize", help="serialization bins: fit on a data set, inspect")
    sub = p.add_subparsers(dest="serialize_command", required=True)

    f = sub.add_parser("fit", help="fit raster-grid edges, energy constants and difficulty weights",
                       description="Fit a serialization bins file on the train split of a data set.")
    f.add_argument("data", help="data set directory (Parquet shards [+ manifest.json])")
    f.add_argument("--out", help="bins JSON to write (default: DATA/bins.json)")
    f.add_argument("--events", type=int, help="events to fit on (default: SerializeConfig.fit_events)")
    f.add_argument("--k", type=int, help="neighbours per point for the difficulty weights")
    f.add_argument("--detector", help="detector name or file (default: the data set's manifest's, "
                                      "else SerializeConfig.detector)")
    f.add_argument("--max-points", type=int, help="point cap (0: none); events over it are not fitted on")
    f.set_defaults(func=fit_handler)

    i = sub.add_parser("info", help="verify a bins file and print its hash and summary")
    i.add_argument("bins", help="bins JSON")
    i.add_argument("--expect", help="fail unless the content hash is this")
    i.set_defaults(func=info_handler)


def fit_handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fm4npp.serialize.bins import dataset_detector, fit_bins_from_dir, save_bins
    from fm4npp.serialize.config import SerializeConfig

    try:
        changes = {"fit_events": args.events, "k": args.k, "detector": args.detector or dataset_detector(args.data),
                   "max_points": args.max_points}
        cfg = SerializeConfig(**{k: v for k, v in changes.items() if v is not None})
        bins = fit_bins_from_dir(args.data, cfg)
    except (ValueError, OSError) as exc:
        print(f"fm4npp serialize fit: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.data) / "bins.json"
    digest = save_bins(bins, out)
    fit = bins.content["fit"]
    print(f"wrote {out}: sha256 {digest} ({fit['events']} events, {fit['points']} points)")
    return 0


def info_handler(args: argparse.Namespace) -> int:
    from fm4npp.serialize.bins import BinsError, load_bins

    try:
        bins = load_bins(args.bins, expected_hash=args.expect)
    except BinsError as exc:
        print(f"fm4npp serialize info: {exc}", file=sys.stderr)
        return 2
    c = bins.content
    summary = {"sha256": bins.hash, "n_bins": bins.n_bins, "ranges": c["ranges"], "edges": c["edges"],
               "energy": c["energy"], "fit": c["fit"]}
    if bins.difficulty:
        summary["difficulty"] = {k: bins.difficulty[k] for k in ("k", "edges", "weights")}
    print(json.dumps(summary, indent=1))
    return 0
