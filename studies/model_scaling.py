"""Model scaling (Figure 5a): validation MSE vs parameters, one trial per model width.

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        -- python studies/model_scaling.py --preset smoke --data /abs/path/to/data

Runs on whatever cluster a bare `ray.init()` joins; rerunning the same command resumes.
"""

import sys

from fm4npp.study.driver import main

if __name__ == "__main__":
    sys.exit(main("model_scaling"))
