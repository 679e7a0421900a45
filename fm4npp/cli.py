"""The `fm4npp` console script: a thin argparse layer over library functions.

Each subpackage owns its commands in a `cli.py` exposing `register(subparsers)`; the
handler is stored as `func` on the parsed namespace and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subpackages whose commands the console script offers, in help order.
COMMAND_MODULES = [
    "fm4npp.sim.cli",
    "fm4npp.data.cli",
    "fm4npp.serialize.cli",
    "fm4npp.model.cli",
    "fm4npp.pretrain.cli",
    "fm4npp.downstream.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fm4npp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency, not a missing command module
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
