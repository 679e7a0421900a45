"""Fault injection for the resume tests, as a pretraining ``step_hook``: rank 0 SIGKILLs itself
once at a given step (a worker dying mid-run), after the last checkpoint is committed so the
test knows which one the replacement worker must resume from.

The Ray workers import it: the test's Ray session has the repository on PYTHONPATH.
"""

import os
import signal
from pathlib import Path

def _kill_rank0_once(at: int, step: int, rank: int, cfg) -> None:
    marker = Path(cfg.storage_path) / cfg.run_name / ".fault_injected"
    if step != at or rank != 0 or marker.exists():
        return
    import ray.train

    # Ray Train registers reports asynchronously: wait for the committed checkpoint
    ray.train.get_all_reported_checkpoints(
        consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=300)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(step))
    os.kill(os.getpid(), signal.SIGKILL)


def kill_rank0_once_at_step_3(step: int, rank: int, cfg) -> None:
    _kill_rank0_once(3, step, rank, cfg)


def kill_rank0_once_at_step_4(step: int, rank: int, cfg) -> None:
    _kill_rank0_once(4, step, rank, cfg)
