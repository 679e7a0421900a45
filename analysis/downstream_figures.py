"""Figures 6, 7 and 8 of the paper from the downstream studies and a trained adapter.

    python analysis/downstream_figures.py fig6 --study downstream-model-size --out figures/ds
    python analysis/downstream_figures.py fig7 --study downstream-data-efficiency --out figures/ds
    python analysis/downstream_figures.py fig8 --adapter ADAPTER_DIR --out figures/ds [--event 0]
    python analysis/downstream_figures.py table --study downstream-model-size

The same as `fm4npp analysis downstream-figures ...`; what each figure shows:
fm4npp/analysis/downstream_figures.py.
"""

import sys

from fm4npp.analysis.downstream_figures import main

if __name__ == "__main__":
    sys.exit(main())
