"""Data pipeline benchmark: Ray Data (read_parquet -> actor pool -> torch batches) against the
same work in a plain Python loop.

Work per event in both: read its Parquet row, keep it if in the train split, serialize it
(coords, raster order, kNN targets, weight) and collate it into padded torch batches. The
Ray run starts its actor pool inside the timed region (what a training job pays); Ray's own
start-up (ray.init) is reported separately. Overhead ratio = Ray wall time / plain wall time
(target <= 1.5 on 2 cores; with 2 actors it can be < 1). Ray workers run at the plain
loop's priority (RAY_worker_niceness=0; Ray's default 15 skews the result on a busy machine).

    python benchmarks/pipeline.py [--quick] [--data DIR] [--actors N]

Prints one JSON object as its last line and writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_data(n_events: int, data: str | None) -> Path:
    from fm4npp.serialize.bins import fit_bins_from_dir, save_bins
    from fm4npp.serialize.config import SerializeConfig
    from fm4npp.serialize.events import write_toy_shards

    if data:
        out = Path(data)
    else:
        out = Path(tempfile.gettempdir()) / f"fm4npp-bench-pipeline-{n_events}"
        if not out.exists():
            write_toy_shards(out, n_events, seed=1, events_per_shard=100)
    bins = out / "bins.json"
    if not bins.exists():
        save_bins(fit_bins_from_dir(out, SerializeConfig(fit_events=200)), bins)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events")
    ap.add_argument("--data", help="data set directory (default: toy events under /tmp)")
    ap.add_argument("--actors", type=int, default=2, help="serialization actors")
    args = ap.parse_args()

    import ray
    import torch  # noqa: F401  (imported before timing: both paths use it)

    from fm4npp.data import pipeline
    from fm4npp.serialize.bins import load_bins
    from fm4npp.serialize.config import PipelineConfig

    n_events = 240 if args.quick else 800
    data = make_data(n_events, args.data)
    bins = load_bins(data / "bins.json")
    # Logical CPUs: the actors may not take both, or the read tasks never get scheduled.
    cfg = PipelineConfig(batch_size=8, shuffle_seed=None, num_actors=args.actors,
                         actor_num_cpus=1.0 / args.actors, map_batch_size=16)

    t0 = time.perf_counter()
    events = pipeline.load_serialized(data, "train", cfg.serialize, bins, cfg)
    plain_batches = sum(1 for _ in pipeline.plain_batches(events, cfg))
    t_plain = time.perf_counter() - t0

    # Ray starts its workers at niceness 15; on a shared, busy box that alone would starve
    # them against this nice-0 plain loop. Same priority for both = a fair comparison.
    os.environ.setdefault("RAY_worker_niceness", "0")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        times = []
        for _ in range(2):  # the second run shows the steady cost (Ray workers already up)
            t0 = time.perf_counter()
            ds = pipeline.build_dataset(data, "train", cfg, bins)
            ray_batches = sum(1 for _ in pipeline.torch_batches(ds, cfg))
            times.append(time.perf_counter() - t0)
    finally:
        ray.shutdown()

    n_train = len(events)
    result = {
        "events_train": n_train,
        "points_train": int(sum(len(e["coords"]) for e in events)),
        "batches_plain": plain_batches,
        "batches_ray": ray_batches,
        "actors": args.actors,
        "cpus": os.cpu_count(),
        "plain_s": round(t_plain, 2),
        "plain_events_per_s": round(n_train / t_plain, 1),
        "ray_init_s": round(t_init, 2),
        "ray_first_s": round(times[0], 2),
        "ray_second_s": round(times[1], 2),
        "ray_events_per_s": round(n_train / min(times), 1),
        "overhead_ratio_first": round(times[0] / t_plain, 3),
        "overhead_ratio": round(min(times) / t_plain, 3),
        "target_ratio": 1.5,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    result["meets_target"] = bool(result["overhead_ratio"] <= 1.5)
    out = ROOT / "benchmarks" / "results" / "pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
