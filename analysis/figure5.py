"""Figure 5 of the paper from the MLflow runs of the scaling studies.

    python analysis/figure5.py --study model_scaling-cpu --out figures/cpu
    python analysis/figure5.py --study model_scaling-smoke --study data_scaling-smoke --out DIR
    python analysis/figure5.py --preset cpu --out figures/cpu     # all three <kind>-cpu studies

The same as `fm4npp analysis figure5 ...`; what it draws, fits and writes:
fm4npp/analysis/figure5.py (`--help` lists the options).
"""

import sys

from fm4npp.analysis.figure5 import main

if __name__ == "__main__":
    sys.exit(main())
