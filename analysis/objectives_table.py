"""The objectives study's table from MLflow: objectives.md + objectives.json.

    python analysis/objectives_table.py --study objectives-cpu --out DIR

Rows: each frozen FM (one per objective variant), AdapterOnly, from scratch; columns the
headline metrics of track finding, PID and noise tagging with their seed intervals; then the
label saving against from scratch and whether the issue's bar is met.
"""

import argparse
import sys
from pathlib import Path

from fm4npp.downstream.studies import EXPERIMENT
from fm4npp.study.objectives_table import objectives_table, to_markdown, write_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="study name, e.g. objectives-cpu")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--experiment", default=EXPERIMENT)
    a = p.parse_args(argv)
    try:
        table = objectives_table(a.study, a.experiment)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    md, js = write_table(table, Path(a.out))
    print(to_markdown(table))
    print(f"written: {md} {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
