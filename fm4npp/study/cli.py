"""`fm4npp study KIND ...`: the scaling studies as a command of the installed package."""

from __future__ import annotations

import argparse

from fm4npp.study.presets import KINDS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="run or resume a scaling study (Figure 5), the objectives or the transfer "
                      "study on the Ray cluster ray.init() finds", add_help=False)
    p.add_argument("kind", choices=KINDS + ("objectives", "transfer"))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the study's options (KIND --help)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    if args.kind == "objectives":
        from fm4npp.study.objectives import main as objectives_main

        return objectives_main(args.rest)
    if args.kind == "transfer":
        from fm4npp.study.transfer import main as transfer_main

        return transfer_main(args.rest)
    from fm4npp.study.driver import main

    return main(args.kind, args.rest)
