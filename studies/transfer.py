"""The transfer study: FMs pretrained on the TPC-only data, on each single domain and on their
mixture, then every frozen FM, AdapterOnly and from scratch on every benchmark (M1-M4).

    ray job submit -- python studies/transfer.py --preset smoke|cpu|paper [--out DIR]

Runs on whatever cluster a bare `ray.init()` joins; rerunning the same command resumes.
"""

import sys

from fm4npp.study.transfer import main

if __name__ == "__main__":
    sys.exit(main())
