"""Kept for benchmarks/pipeline.py only, until its owner imports fm4npp.bench_report (the other
scripts do): the old `emit(name, result)` with the results beside this file."""

from fm4npp.bench_report import emit as _emit, results_dir

RESULTS = results_dir(__file__)


def emit(name: str, result: dict) -> None:
    _emit(name, result, RESULTS)
