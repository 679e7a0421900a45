"""`fm4npp simulate`: PYTHIA 8 events of a facility through a detector simulation into Parquet shards."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from fm4npp.sim.config import DEFAULT_DETECTOR, DEFAULT_FACILITY
    from fm4npp.sim.spec_files import known

    p = sub.add_parser("simulate", help="simulate collision events into Parquet shards (resumable)",
                       description=__doc__)
    p.add_argument("--events", type=int, required=True, help="number of events (with at least one hit)")
    p.add_argument("--seed", type=int, required=True, help="run seed (same seed, same bytes)")
    p.add_argument("--out", required=True, help="output data set directory")
    p.add_argument("--workers", type=int, default=1, help="Ray tasks in parallel (1: in-process)")
    p.add_argument("--events-per-shard", type=int, default=None, help="events per shard / seed block")
    p.add_argument("--detector", default=DEFAULT_DETECTOR,
                   help=f"detector: {', '.join(known('detectors'))} or a path to a .toml file (default %(default)s)")
    p.add_argument("--facility", default=DEFAULT_FACILITY,
                   help=f"facility: {', '.join(known('facilities'))} or a path to a .toml file (default %(default)s)")
    p.add_argument("--physics", default="baseline", choices=("baseline", "extended"),
                   help="physics list: baseline (today's, output fixed) or extended (+ loopers followed to "
                        "the end, Compton, photo-effect, hadronic absorption; fm4npp/sim/physics_list.py)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def run(args) -> int:
    from fm4npp.sim.config import GeneratorConfig, SimConfig, TransportConfig
    from fm4npp.sim.run import run_simulation

    if args.events < 1 or args.workers < 1 or (args.events_per_shard is not None and args.events_per_shard < 1):
        print("fm4npp simulate: --events, --workers and --events-per-shard must be >= 1", file=sys.stderr)
        return 2
    kw = {} if args.events_per_shard is None else {"events_per_shard": args.events_per_shard}
    try:
        cfg = SimConfig(events=args.events, seed=args.seed, workers=args.workers, detector=args.detector,
                        generator=GeneratorConfig(facility=args.facility),
                        transport=TransportConfig(physics=args.physics), **kw)
        cfg.physics_dict()  # reads both files: a bad one stops here, naming the file and the key
        manifest = run_simulation(cfg, args.out, progress=not args.quiet)
    except ValueError as exc:
        print(f"fm4npp simulate: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"out": str(args.out), **manifest["counts"]}))
    return 0
