"""`fm4npp analysis figure5|downstream-figures ...`: the analysis scripts as commands of the
installed package (`python analysis/<name>.py` runs the same main)."""

from __future__ import annotations

import argparse

SCRIPTS = ("figure5", "downstream-figures")


def register(subparsers) -> None:
    p = subparsers.add_parser("analysis", add_help=False,
                              help="draw the paper's figures from the MLflow runs "
                                   "(figure5: scaling laws; downstream-figures: 6, 7, 8)")
    p.add_argument("script", choices=SCRIPTS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the script's options (SCRIPT --help)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    # imported on use: matplotlib, MLflow and sklearn would slow every other command's start
    if args.script == "figure5":
        from fm4npp.analysis.figure5 import main
    else:
        from fm4npp.analysis.downstream_figures import main
    return main(args.rest, prog=f"fm4npp analysis {args.script}")
