"""The objectives study: each pretraining objective (causal and bidirectional) at the same
compute, then frozen-FM adapters vs AdapterOnly vs from scratch on the same labelled events.

    ray job submit -- python studies/objectives.py --preset smoke|cpu [--out DIR]

Runs on whatever cluster a bare `ray.init()` joins; rerunning the same command resumes.
"""

import sys

from fm4npp.study.objectives import main

if __name__ == "__main__":
    sys.exit(main())
