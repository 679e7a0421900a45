"""Seed blocks -> Parquet shards: the simulation driver (in-process or Ray tasks).

Shard b holds events b*M .. b*M+M-1 (M = events_per_shard) simulated from its own seeds
(:func:`fm4npp.sim.generator.block_seeds`), so the content depends only on (seed, b, config):
the same seed gives the same bytes with any number of workers, and a killed run rerun with the
same arguments keeps its verified shards and simulates only the missing ones.
Events without any hit (mostly diffractive) are not written: a shard is filled with the next
generated events; the manifest counts generated and written events.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from fm4npp.data import shards
from fm4npp.data.schema import EVENT_SCHEMA, SCHEMA_VERSION
from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import SimConfig
from fm4npp.sim.digitize import digitize
from fm4npp.sim.generator import PythiaGenerator, block_seeds, ensure_init_cache, settings
from fm4npp.sim.geometry import Detector, get_detector
from fm4npp.sim.particles import make_particles
from fm4npp.sim.single import simulate_particles, transport_all
from fm4npp.sim.table import build_table


def _register_generated(g: dict, vtx: np.ndarray, reg: sec.TrackRegistry, tcfg, rng) -> dict:
    """Register generator particles (decayed mothers first) and make the transport input."""
    m = g["mothers"]
    mtid = reg.add(m["ev"], m["pdg"], m["q"], m["px"], m["py"], m["pz"],
                   m["vx"] + vtx[m["ev"], 0], m["vy"] + vtx[m["ev"], 1], m["vz"] + vtx[m["ev"], 2], -1, True)
    ev = g["ev"]
    vx, vy, vz = g["vx"] + vtx[ev, 0], g["vy"] + vtx[ev, 1], g["vz"] + vtx[ev, 2]
    mo = g["mother"]
    parent = np.where(mo >= 0, mtid[np.maximum(mo, 0)] if len(mtid) else -1, -1)
    tid = reg.add(ev, g["pdg"], g["q"], g["px"], g["py"], g["pz"], vx, vy, vz, parent, mo < 0)
    return make_particles(ev, tid, g["pdg"], g["q"], g["m"], vx, vy, vz, g["px"], g["py"], g["pz"], 0, rng, tcfg)


def nch_eta05(g: dict) -> int:
    """Charged final-state generator particles at |eta| < 0.5 (the dNch/deta numerator)."""
    pt = np.hypot(g["px"], g["py"])
    eta = np.arcsinh(g["pz"] / np.maximum(pt, 1e-12))
    return int(np.sum((g["q"] != 0) & (np.abs(eta) < 0.5)))


def simulate_batch(generator: PythiaGenerator, n_events: int, det: Detector, cfg: SimConfig, rng):
    """n_events PYTHIA events through the detector. Returns (table of the events with hits,
    indexed 0..n-1 as event_id placeholders, stats)."""
    t0 = time.perf_counter()
    g = generator.generate(n_events)
    t1 = time.perf_counter()
    sx, sy, sz = generator.facility.beam_spot_cm
    vtx = np.stack([rng.normal(0, sx, n_events), rng.normal(0, sy, n_events), rng.normal(0, sz, n_events)], 1)
    reg = sec.TrackRegistry()
    P0 = _register_generated(g, vtx, reg, cfg.transport, rng)
    cross = transport_all(P0, reg, det, cfg.transport, rng)
    hits = digitize(cross, det, cfg.digitize, cfg.transport, rng)
    table = build_table(hits, reg.arrays(), n_events, np.arange(n_events, dtype=np.int64))
    stats = dict(generated_events=n_events, nch_eta05=nch_eta05(g), nch=int(np.sum(g["q"] != 0)),
                 pythia_s=t1 - t0, total_s=time.perf_counter() - t0)
    return table, stats


def shard_name(block: int) -> str:
    return f"shard-{block:05d}.parquet"


def plan(cfg: SimConfig) -> list[tuple[int, int]]:
    """[(block, events)] of the run."""
    m = cfg.events_per_shard
    return [(b, min(m, cfg.events - b * m)) for b in range((cfg.events + m - 1) // m)]


def simulate_shard(cfg: SimConfig, block: int, n_events: int, out_dir: str | None, progress=None):
    """Simulate seed block `block` (n_events written events) and write its shard atomically
    (out_dir None: return the table instead). Returns the manifest file entry."""
    import pyarrow as pa

    det = get_detector(cfg.detector)
    py_seed, ss = block_seeds(cfg.seed, block)
    rng = np.random.default_rng(ss)
    gen = PythiaGenerator(cfg.generator, py_seed)
    tables, have = [], 0
    totals = dict(generated_events=0, nch_eta05=0, nch=0, pythia_s=0.0, total_s=0.0)
    while have < n_events:
        # ~20 % of min-bias events leave no hit and are skipped: ask for a few more than needed
        want = min(cfg.events_per_batch, int(1.3 * (n_events - have)) + 8)
        t, st = simulate_batch(gen, want, det, cfg, rng)
        t = t.slice(0, n_events - have)
        tables.append(t)
        have += t.num_rows
        for k in totals:
            totals[k] += st[k]
        if progress:
            progress(t.num_rows)
    table = pa.concat_tables(tables).combine_chunks()
    ids = np.arange(n_events, dtype=np.int64) + block * cfg.events_per_shard
    # the schema's field, not a bare name: a name would make event_id nullable again
    table = table.set_column(0, EVENT_SCHEMA.field("event_id"), pa.array(ids, pa.int64()))
    n_hits = int(pa.compute.sum(pa.compute.list_value_length(table["hit_x"])).as_py())
    entry = dict(events=n_events, block=block, pythia_seed=py_seed, hits=n_hits, **totals)
    if out_dir is None:
        return table, entry
    entry["sha256"] = shards.write_table_atomic(table, Path(out_dir) / shard_name(block))
    return entry


class Progress:
    """events/s and ETA on stderr."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.done, self.start_done = total, done, done
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last < 1.0 and self.done < self.total:
            return
        self.last = now
        rate = (self.done - self.start_done) / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        msg = f"simulate: {self.done}/{self.total} events, {rate:.0f} events/s, ETA {eta:.0f} s"
        print(("\r" + msg) if self.tty else msg, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _manifest_base(cfg: SimConfig, det: Detector) -> dict:
    """The manifest's description of the run: facility and detector (name, file, sha256 and
    content), the generator settings, transport and digitisation, seeds."""
    import pythia8mc

    from fm4npp.sim.facility import load_facility

    return {
        "schema_version": SCHEMA_VERSION,
        "facility": load_facility(cfg.generator.facility).to_dict(),
        "generator": {"name": "PYTHIA 8 (pythia8mc)", "version": getattr(pythia8mc, "__version__", "?"),
                      "settings": settings(cfg.generator), **cfg.to_dict()["generator"]},
        "detector": det.to_dict(),
        "transport": cfg.to_dict()["transport"],
        "digitize": cfg.to_dict()["digitize"],
        "config": cfg.physics_dict(),
        "seeds": {"seed": cfg.seed, "blocks": {str(b): block_seeds(cfg.seed, b)[0] for b, _ in plan(cfg)}},
        "counts": {"planned_events": cfg.events},
        "complete": False,
        "files": {},
    }


def run_simulation(cfg: SimConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Simulate cfg.events events into out_dir (resuming a previous run with the same
    configuration); returns the final manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    det = get_detector(cfg.detector)
    old = shards.read_manifest(out, missing_ok=True, hint="move it away to start afresh")
    if old is not None and old.get("config") != json.loads(json.dumps(cfg.physics_dict())):
        raise ValueError(f"{out / shards.MANIFEST}: holds a data set made with another configuration or seed; "
                         "use a new --out directory")
    blocks = plan(cfg)
    wanted = {shard_name(b): n for b, n in blocks}
    if old is not None:
        extra = sorted(set(old.get("files", {})) - set(wanted))
        if extra:
            raise ValueError(f"{out}: has shards beyond this run ({extra[0]} ...); rerun with the same --events")
    shards.clean_tmp(out)
    done = {k: v for k, v in shards.verified_files(out, old).items() if wanted.get(k) == v.get("events")}
    manifest = _manifest_base(cfg, det)
    manifest["files"] = done
    shards.write_manifest(out, manifest)
    todo = [(b, n) for b, n in blocks if shard_name(b) not in done]
    bar = Progress(cfg.events, sum(v["events"] for v in done.values())) if progress else None

    def finish(entry: dict) -> None:
        manifest["files"][shard_name(entry["block"])] = entry
        shards.write_manifest(out, manifest)

    if todo:
        ensure_init_cache(cfg.generator)  # once, before workers could race to build it
    if cfg.workers <= 1:
        for b, n in todo:
            finish(simulate_shard(cfg, b, n, str(out), progress=bar))
    else:
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(num_cpus=cfg.workers, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(num_cpus=1)(simulate_shard)
            pending = {task.remote(cfg, b, n, str(out)): n for b, n in todo}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                n = pending.pop(ready[0])
                finish(ray.get(ready[0]))
                if bar:
                    bar(n)
        finally:
            if started:
                ray.shutdown()
    if bar:
        bar.close()
    files = manifest["files"]
    manifest["counts"].update(
        generated_events=int(sum(v["generated_events"] for v in files.values())),
        hits=int(sum(v["hits"] for v in files.values())),
        generator_nch_eta05=int(sum(v["nch_eta05"] for v in files.values())),
        generator_nch=int(sum(v.get("nch", 0) for v in files.values())),
    )
    ge = max(manifest["counts"]["generated_events"], 1)
    manifest["counts"]["generator_dnch_deta_eta05"] = manifest["counts"]["generator_nch_eta05"] / ge
    # charged final-state particles per generated event, full acceptance (Z pole: 20.76 PDG)
    manifest["counts"]["generator_mean_nch"] = manifest["counts"]["generator_nch"] / ge
    manifest["complete"] = True
    shards.write_manifest(out, manifest)
    return shards.read_manifest(out)


__all__ = ["run_simulation", "simulate_particles", "simulate_shard", "simulate_batch", "plan"]
