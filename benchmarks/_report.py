"""The benchmarks' output contract: one JSON object written to benchmarks/results/<name>.json
and printed as the last stdout line (scripts run as `python benchmarks/<name>.py`, so this
module imports as `_report`)."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def emit(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
