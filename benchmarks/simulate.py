"""End-to-end simulation throughput (PYTHIA -> transport -> digitisation -> Parquet) per core,
with the PYTHIA-only rate measured in the same run, and the physics summary of the output.

    python benchmarks/simulate.py [--quick] [--events N] [--no-pairs]

Besides the default sPHENIX TPC p+p run it measures every shipped detector x facility pair
(and sPHENIX p+p with `--physics extended`), each against its own PYTHIA-alone rate: the
"pairs" block of the JSON.

Rates are given per wall second and per CPU second of this (single-threaded) process: on a
shared machine the CPU-time rate is the per-core number. Target: >= 300 events/s/core.
Prints one JSON object as the last stdout line and writes benchmarks/results/simulate.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from fm4npp.bench_report import emit, results_dir

RESULTS = results_dir(__file__)

PYTHIA_REFERENCE = 3700.0  # events/s/core the issue quotes for PYTHIA alone
TARGET = 300.0


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


# detector x facility pairs of the issue (and the extended physics list on sPHENIX p+p)
PAIRS = (("sphenix_tpc", "rhic_pp200", "baseline"), ("sphenix_tpc", "rhic_pp200", "extended"),
         ("sphenix", "rhic_pp200", "baseline"), ("sphenix", "rhic_pp200", "extended"),
         ("aleph", "lep_z", "baseline"), ("zeus", "hera_ep", "baseline"),
         ("zeus", "eic_ep", "baseline"))


def measure(cfg, seed: int) -> tuple[dict, dict, str]:
    """(rates, manifest counts, output dir's physics summary) of one simulation config."""
    from fm4npp.data.stats import physics_summary
    from fm4npp.sim.generator import PythiaGenerator, block_seeds, ensure_init_cache
    from fm4npp.sim.run import run_simulation

    ensure_init_cache(cfg.generator)
    # PYTHIA alone: generation + our particle extraction loop (the generator stage)
    gen = PythiaGenerator(cfg.generator, block_seeds(seed, 10_000)[0])
    n_py = max(cfg.events // 2, 200)
    _, py_wall, py_cpu = _timed(lambda: gen.generate(n_py))
    with tempfile.TemporaryDirectory(prefix="fm4npp-bench-sim-") as d:
        manifest, wall, cpu = _timed(lambda: run_simulation(cfg, d, progress=False))
        summary = physics_summary(d)
        size = sum(p.stat().st_size for p in Path(d).glob("*.parquet"))
    c = manifest["counts"]
    rates = {
        "events": c["events"],
        "e2e_events_per_s_wall": c["events"] / wall,
        "e2e_events_per_s_per_core": c["events"] / cpu,
        "pythia_events_per_s_wall": n_py / py_wall,
        "pythia_events_per_s_per_core": n_py / py_cpu,
        "e2e_over_pythia": (c["events"] / cpu) / (n_py / py_cpu),
        "bytes_per_event": size / max(c["events"], 1),
    }
    return rates, c, summary


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events (CI)")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--no-pairs", action="store_true", help="only the default sPHENIX TPC p+p run")
    args = ap.parse_args()
    n = args.events or (500 if args.quick else 3000)

    import dataclasses

    from fm4npp.sim.config import GeneratorConfig, SimConfig, TransportConfig

    # pyarrow imports pandas on its first pa.array(): a once-per-process cost (like the PYTHIA
    # init cache) that would otherwise weigh ~15 % on a 500-event run.
    import pandas  # noqa: F401

    cfg = SimConfig(events=n, seed=args.seed, events_per_shard=min(n, 1000), workers=1)
    rates, c, summary = measure(cfg, args.seed)
    result = {
        "benchmark": "simulate",
        **rates,
        "generated_events": c["generated_events"],
        "target_events_per_s_per_core": TARGET,
        "meets_target": rates["e2e_events_per_s_per_core"] >= TARGET,
        # The target next to PYTHIA's ~3,700 events/s: as a same-run ratio it holds on
        # a machine whose speed drifts (PYTHIA alone has measured 1,700-2,800/s here).
        "target_over_pythia": TARGET / PYTHIA_REFERENCE,
        "meets_target_ratio": rates["e2e_over_pythia"] >= TARGET / PYTHIA_REFERENCE,
        "generator_dnch_deta_eta05": c["generator_dnch_deta_eta05"],
        "physics": summary,
    }
    if not args.no_pairs:
        n_pair = max(100, n // 10)
        result["pairs"] = {}
        for det, fac, physics in PAIRS:
            pcfg = SimConfig(events=n_pair, seed=args.seed, events_per_shard=n_pair, detector=det,
                             generator=GeneratorConfig(facility=fac),
                             transport=dataclasses.replace(TransportConfig(), physics=physics))
            r, pc, ps = measure(pcfg, args.seed)
            result["pairs"][f"{det}/{fac}/{physics}"] = {
                **r, "hits_per_event_mean": ps.get("hits_per_event_mean")}
            print(f"{det} x {fac} ({physics}): {r['e2e_events_per_s_per_core']:.0f} events/s/core, "
                  f"PYTHIA alone {r['pythia_events_per_s_per_core']:.0f} "
                  f"(ratio {r['e2e_over_pythia']:.3f})")
    print(f"PYTHIA only: {result['pythia_events_per_s_per_core']:.0f} events/s/core; "
          f"end-to-end: {result['e2e_events_per_s_per_core']:.0f} events/s/core "
          f"({result['e2e_events_per_s_wall']:.0f}/s wall); target {TARGET:.0f}")
    result["load_avg_1min"] = os.getloadavg()[0]  # other jobs on the cores slow the wall rates
    emit("simulate", result, RESULTS)
    return result


if __name__ == "__main__":
    main()
