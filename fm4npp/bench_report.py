"""The benchmarks' output contract: one JSON object written to <results>/<name>.json and
printed as the last stdout line (what `python benchmarks/<name>.py` promises its callers).

Here rather than beside the scripts so they import it as an installed module, with no
sys.path edit. The results directory is the caller's to name: the committed numbers live in
the checkout's benchmarks/results/, which an installed package cannot locate by itself.
"""

from __future__ import annotations

import json
from pathlib import Path


def results_dir(script: str | Path) -> Path:
    """`results/` beside a benchmark script (pass its ``__file__``)."""
    return Path(script).resolve().parent / "results"


def emit(name: str, result: dict, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
