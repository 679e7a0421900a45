"""Pretraining benchmark: does a width-32 model learn, and how fast do 1 and 2 workers go?

1. 2,000 simulated events (``fm4npp.sim``; cached under /tmp) with fitted serialization bins.
2. Short runs with 1 and 2 Ray Train workers at the same global batch: training tokens/s,
   each worker's torch threads, and the time of the gradient all-reduce 2 workers add to
   every step (gloo, measured apart between two processes at the model's parameter count).
3. A w32 run on one worker with as many steps as fit a training budget at the speed just
   measured (8 min; 2.5 with --quick): validation MSE at the end against the trivial baseline
   (every neighbour predicted at the point's own coordinates), and the wall time (< 10 min).

    python benchmarks/pretrain.py [--quick] [--data DIR]

Prints one JSON object as its last line and writes benchmarks/results/pretrain.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from fm4npp.bench_report import emit, results_dir

RESULTS = results_dir(__file__)


def make_data(events: int, data: str | None) -> Path:
    from fm4npp.data.io import read_events
    from fm4npp.serialize.bins import fit_bins, save_bins
    from fm4npp.serialize.config import SerializeConfig

    if data:
        out = Path(data)
    else:
        from fm4npp.sim.config import SimConfig
        from fm4npp.sim.run import run_simulation

        import hashlib
        import json

        cfg = SimConfig(events=events, seed=7, events_per_shard=500)
        # keyed by the simulation's physics: a cache from another fm4npp version is not reused
        key = hashlib.sha256(json.dumps(cfg.physics_dict(), sort_keys=True).encode()).hexdigest()[:10]
        out = Path(tempfile.gettempdir()) / f"fm4npp-bench-pretrain-{events}-{key}"
        t0 = time.perf_counter()
        run_simulation(cfg, out, progress=False)
        print(f"simulated {events} events in {time.perf_counter() - t0:.0f} s -> {out}",
              file=sys.stderr)
    if not (out / "bins.json").exists():
        save_bins(fit_bins(read_events(out), SerializeConfig()), out / "bins.json")
    return out


def tokens_per_s(run_id: str) -> float:
    """Median training tokens/s over the logged windows after the first (warm-up) one."""
    import numpy as np

    from fm4npp import runs

    vals = [v for _, v in runs.metric_history(run_id, "tokens_per_s")]
    return float(np.median(vals[1:] if len(vals) > 1 else vals))


def _allreduce_worker(rank: int, n: int, reps: int, port: int, out) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # as a Ray Train worker with 0.5 CPU runs
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    buf = torch.randn(n)
    dist.all_reduce(buf)  # warm-up: connection set-up
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(buf)
    if rank == 0:
        out.put((time.perf_counter() - t0) / reps)
    dist.destroy_process_group()


def allreduce_seconds(n_params: int, reps: int = 50) -> float:
    """Wall time of one gloo all-reduce of ``n_params`` float32 between two local processes:
    what DDP adds to every 2-worker step (one gradient bucket at these sizes)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_allreduce_worker, args=(r, n_params, reps, port, q)) for r in (0, 1)]
    for p in procs:
        p.start()
    t = q.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
    return float(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a 2.5-minute instead of an 8-minute training budget (same data)")
    ap.add_argument("--data", help="existing data set directory (default: simulate)")
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args()

    import ray

    from fm4npp import runs
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.run import build_datasets, run_pretraining

    work = Path(tempfile.mkdtemp(prefix="fm4npp-bench-pretrain-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    data = make_data(args.events, args.data)
    budget_s = 150 if args.quick else 480  # training wall time of the learning run (< 10 min)
    base = PretrainConfig(preset="w32", data=str(data), lr=3e-3, batch_size=8, log_every=20,
                          val_events=200, storage_path=str(work / "runs"),
                          experiment="bench-pretrain")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        datasets = build_datasets(base.resolved())
        prep_s = time.perf_counter() - t0
        n_train, n_val = datasets["train"].count(), datasets["val"].count()
        speed, threads, step_s, steps_s = {}, {}, None, {}
        for w in (1, 2):
            t0 = time.perf_counter()
            r = run_pretraining(base.replace(workers=w, steps=60, warmup=5, val_every=60,
                                             ckpt_every=60, val_events=16, run_name=f"speed-{w}"),
                                datasets=datasets)
            speed[w] = tokens_per_s(r["mlflow_run_id"])
            hist = runs.metric_history(r["mlflow_run_id"], "torch_threads")
            threads[w] = int(hist[-1][1]) if hist else None
            steps_s[w] = r["D"] / r["steps"] / speed[w]  # seconds per global step
            if w == 1:
                step_s = steps_s[1]
        # as many steps as fit the budget on this machine now (the cosine needs them upfront)
        steps = int(min(3000, max(200, budget_s / step_s)))
        t0 = time.perf_counter()
        learn = run_pretraining(base.replace(steps=steps, warmup=steps // 20,
                                             val_every=max(1, steps // 4), ckpt_every=steps,
                                             run_name=f"learn-{steps}"), datasets=datasets)
        learn_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    allreduce_s = allreduce_seconds(learn["N"])
    out = {
        "benchmark": "pretrain",
        "quick": args.quick,
        "data": str(data),
        "train_events": n_train,
        "val_events_used": min(n_val, base.val_events),
        "preset": base.preset,
        "params_N": learn["N"],
        "steps": learn["steps"],
        "global_batch": base.batch_size,
        "serialize_s": round(prep_s, 1),
        "train_wall_s": round(learn_s, 1),
        "within_10_min": learn_s < 600,
        "val_mse": learn["val_mse"],
        "trivial_baseline_mse": learn["val_baseline_mse"],
        "val_over_baseline": learn["val_mse"] / learn["val_baseline_mse"],
        "spacepoints_D": learn["D"],
        "flops_C": learn["C"],
        "tokens_per_s_1_worker": speed[1],
        "tokens_per_s_2_workers": speed[2],
        "speedup_2_over_1": speed[2] / speed[1],
        # why 2 workers are not 2x: each worker's torch threads (Ray sets OMP_NUM_THREADS from
        # its CPU share) and the gradient all-reduce DDP adds to every step
        "torch_threads_per_worker": threads,
        "step_s_1_worker": steps_s[1],
        "step_s_2_workers": steps_s[2],
        "allreduce_bytes": 4 * learn["N"],
        "allreduce_s": allreduce_s,
        "allreduce_share_of_2_worker_step": allreduce_s / steps_s[2],
        "load_avg_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "mlflow": runs.tracking_uri(),
    }
    emit("pretrain", out, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
