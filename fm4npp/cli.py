"""The `fm4npp` console script: a thin argparse layer over library functions.

Each subpackage owns its commands in a `cli.py` exposing `register(subparsers)`; the
handler is stored as `func` on the parsed namespace and returns an exit code.

Bad input data found anywhere under a command, Ray workers included, ends it with one line
naming the file, the row and the problem; the traceback goes to a log file named in that line
(the handler's ``args.error_log`` if it set one, else a temporary file).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subpackages whose commands the console script offers, in help order.
COMMAND_MODULES = [
    "fm4npp.sim.cli",
    "fm4npp.data.cli",
    "fm4npp.serialize.cli",
    "fm4npp.model.cli",
    "fm4npp.pretrain.cli",
    "fm4npp.downstream.cli",
    "fm4npp.study.cli",
    "fm4npp.analysis.cli",
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
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        from fm4npp.data.errors import find_data_error

        err = find_data_error(exc)
        if err is None:
            raise
        log = _write_traceback(exc, getattr(args, "error_log", None))
        print(f"fm4npp {args.command}: {err.one_line()} (traceback in {log})", file=sys.stderr)
        return 1


def _write_traceback(exc: BaseException, path: str | None) -> str:
    import tempfile
    import traceback
    from pathlib import Path

    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    else:
        fd, path = tempfile.mkstemp(prefix="fm4npp-error-", suffix=".log")
        os.close(fd)
    # a Ray wrapper's text holds the worker-side traceback too
    Path(path).write_text("".join(traceback.format_exception(exc)))
    return path


if __name__ == "__main__":
    sys.exit(main())
