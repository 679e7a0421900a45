"""The transfer study's report from MLflow: transfer.md, transfer.json (the M1-M4 verdicts
with their evidence) and the figures (label-efficiency curves, the transfer matrix).

    python analysis/transfer_report.py --study transfer-cpu --out DIR
"""

import argparse
import sys
from pathlib import Path

from fm4npp.downstream.studies import EXPERIMENT
from fm4npp.study.transfer_report import to_markdown, transfer_report, write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="study name, e.g. transfer-cpu")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--experiment", default=EXPERIMENT)
    a = p.parse_args(argv)
    try:
        report = transfer_report(a.study, a.experiment)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = write_report(report, Path(a.out))
    print(to_markdown(report))
    print("written: " + " ".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
