"""Data scaling (Figure 5b): one width trained on 1, 2.4, 11.6, 20, 47.6 and 100 % of the training set.

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        -- python studies/data_scaling.py --preset smoke --data /abs/path/to/data

Runs on whatever cluster a bare `ray.init()` joins; rerunning the same command resumes.
"""

import sys

from fm4npp.study.driver import main

if __name__ == "__main__":
    sys.exit(main("data_scaling"))
