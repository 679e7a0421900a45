"""Figure 7: downstream score vs number of labelled training events (from 100 upward), for
frozen-FM adapters and the AdapterOnly baseline trained on the same nested event subsets.

    python studies/downstream_data_efficiency.py --data DATA_DIR --backbone w32=CKPT_DIR \
        [--task tracking] [--n-train 100,200,500,1000] [--epochs 20] [--set key=value ...]

The subsets are nested (the first n of one seeded permutation). One MLflow child run per
(source, n, seed); rerunning resumes. analysis/downstream_figures.py fig7 draws the curves and
reads off the label-saving factor.
"""

import argparse
import sys

from fm4npp.downstream.config import FinetuneConfig
from fm4npp.downstream.studies import EXPERIMENT, Cell, parse_backbones, run_cells


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--backbone", action="append", default=[], metavar="LABEL=DIR")
    p.add_argument("--task", default="tracking", choices=["tracking", "pid", "noise"])
    p.add_argument("--n-train", default="100,200,500,1000", help="comma list of labelled event counts")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", default="0")
    p.add_argument("--sources", default="fm,raw", help="fm (frozen backbones) and/or raw (AdapterOnly)")
    p.add_argument("--name", default="downstream-data-efficiency")
    p.add_argument("--experiment", default=EXPERIMENT)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args(argv)
    ns = sorted(int(n) for n in a.n_train.split(","))
    if ns[0] < 1:
        p.error("--n-train values must be >= 1")
    base = FinetuneConfig(source="raw", data=a.data, epochs=a.epochs).with_overrides(a.set)
    backbones = parse_backbones(a.backbone)
    sources = a.sources.split(",")
    if "fm" in sources and not backbones:
        p.error("source fm needs at least one --backbone LABEL=DIR")
    cells = []
    for seed in map(int, a.seeds.split(",")):
        for n in ns:
            if "fm" in sources:
                cells += [Cell(a.task, "fm", label, path, n, seed) for label, path in backbones.items()]
            if "raw" in sources:  # the same events and serialization (the data set's bins file)
                cells.append(Cell(a.task, "raw", "", "", n, seed))
    run_cells(a.name, cells, base, a.experiment)
    print(f"study {a.name}: {len(cells)} cells in MLflow experiment {a.experiment}; "
          f"draw: python analysis/downstream_figures.py fig7 --study {a.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
