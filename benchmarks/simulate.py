"""End-to-end simulation throughput (PYTHIA -> transport -> digitisation -> Parquet) per core,
with the PYTHIA-only rate measured in the same run, and the physics summary of the output.

    python benchmarks/simulate.py [--quick] [--events N]

Rates are given per wall second and per CPU second of this (single-threaded) process: on a
shared machine the CPU-time rate is the per-core number. Target: >= 300 events/s/core.
Prints one JSON object as the last stdout line and writes benchmarks/results/simulate.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _report import emit

PYTHIA_REFERENCE = 3700.0  # events/s/core the issue quotes for PYTHIA alone
TARGET = 300.0


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events (CI)")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    n = args.events or (500 if args.quick else 3000)

    from fm4npp.data.stats import physics_summary
    from fm4npp.sim.config import SimConfig
    from fm4npp.sim.generator import PythiaGenerator, block_seeds, ensure_init_cache
    from fm4npp.sim.run import run_simulation

    cfg = SimConfig(events=n, seed=args.seed, events_per_shard=min(n, 1000), workers=1)
    ensure_init_cache(cfg.generator)
    # pyarrow imports pandas on its first pa.array(): a once-per-process cost (like the PYTHIA
    # init cache above) that would otherwise weigh ~15 % on a 500-event run.
    import pandas  # noqa: F401
    # PYTHIA alone: generation + our particle extraction loop (the generator stage)
    gen = PythiaGenerator(cfg.generator, block_seeds(args.seed, 10_000)[0])
    n_py = max(n // 2, 200)
    _, py_wall, py_cpu = _timed(lambda: gen.generate(n_py))

    with tempfile.TemporaryDirectory(prefix="fm4npp-bench-sim-") as d:
        manifest, wall, cpu = _timed(lambda: run_simulation(cfg, d, progress=False))
        summary = physics_summary(d)
        size = sum(p.stat().st_size for p in Path(d).glob("*.parquet"))
    c = manifest["counts"]
    result = {
        "benchmark": "simulate",
        "events": c["events"],
        "generated_events": c["generated_events"],
        "e2e_events_per_s_wall": c["events"] / wall,
        "e2e_events_per_s_per_core": c["events"] / cpu,
        "pythia_events_per_s_wall": n_py / py_wall,
        "pythia_events_per_s_per_core": n_py / py_cpu,
        "e2e_over_pythia": (c["events"] / cpu) / (n_py / py_cpu),
        "target_events_per_s_per_core": TARGET,
        "meets_target": c["events"] / cpu >= TARGET,
        # The target next to PYTHIA's ~3,700 events/s: as a same-run ratio it holds on
        # a machine whose speed drifts (PYTHIA alone has measured 1,700-2,800/s here).
        "target_over_pythia": TARGET / PYTHIA_REFERENCE,
        "meets_target_ratio": (c["events"] / cpu) / (n_py / py_cpu) >= TARGET / PYTHIA_REFERENCE,
        "bytes_per_event": size / max(c["events"], 1),
        "generator_dnch_deta_eta05": c["generator_dnch_deta_eta05"],
        "physics": summary,
    }
    print(f"PYTHIA only: {result['pythia_events_per_s_per_core']:.0f} events/s/core; "
          f"end-to-end: {result['e2e_events_per_s_per_core']:.0f} events/s/core "
          f"({result['e2e_events_per_s_wall']:.0f}/s wall); target {TARGET:.0f}")
    emit("simulate", result)
    return result


if __name__ == "__main__":
    main()
