"""Compute scaling (Figure 5c): every width at 25, 50 and 100 % of its step budget, each with
its cosine schedule ending at its own last step; the analysis draws the compute-optimal frontier.

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        -- python studies/compute_scaling.py --preset smoke --data /abs/path/to/data

Runs on whatever cluster a bare `ray.init()` joins; rerunning the same command resumes.
"""

import sys

from fm4npp.study.driver import main

if __name__ == "__main__":
    sys.exit(main("compute_scaling"))
