"""Figure 6: downstream performance vs the size of the frozen pretrained backbone.

    python studies/downstream_model_size.py --data DATA_DIR \
        --backbone w8=CKPT_DIR --backbone w32=CKPT_DIR [--tasks tracking,pid,noise] \
        [--n-train 1000] [--epochs 20] [--sources fm,raw] [--set key=value ...]

One MLflow child run per (task, backbone) plus AdapterOnly per task (the dashed line), all
scored on the same test events; rerunning resumes. Draw with analysis/downstream_figures.py.
"""

import argparse
import sys

from fm4npp.downstream.config import FinetuneConfig
from fm4npp.downstream.studies import EXPERIMENT, Cell, parse_backbones, run_cells


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--backbone", action="append", default=[], metavar="LABEL=DIR")
    p.add_argument("--tasks", default="tracking,pid,noise")
    p.add_argument("--n-train", type=int, default=0, help="labelled training events (0 = all)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", default="0")
    p.add_argument("--sources", default="fm,raw", help="fm (frozen backbones) and/or raw (AdapterOnly)")
    p.add_argument("--name", default="downstream-model-size")
    p.add_argument("--experiment", default=EXPERIMENT)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args(argv)

    base = FinetuneConfig(source="raw", data=a.data, epochs=a.epochs).with_overrides(a.set)
    backbones = parse_backbones(a.backbone)
    sources = a.sources.split(",")
    if "fm" in sources and not backbones:
        p.error("source fm needs at least one --backbone LABEL=DIR")
    cells = []
    for task in a.tasks.split(","):
        for seed in map(int, a.seeds.split(",")):
            if "fm" in sources:
                cells += [Cell(task, "fm", label, path, a.n_train, seed) for label, path in backbones.items()]
            if "raw" in sources:  # the same events and serialization (the data set's bins file)
                cells.append(Cell(task, "raw", "", "", a.n_train, seed))
    run_cells(a.name, cells, base, a.experiment)
    print(f"study {a.name}: {len(cells)} cells in MLflow experiment {a.experiment}; "
          f"draw: python analysis/downstream_figures.py fig6 --study {a.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
