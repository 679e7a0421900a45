"""Model throughput on this CPU: training tokens/s, FLOP utilisation, chunked-scan speed-up.

* matmul FLOP/s of this machine (fp32 GEMM, 2048^3, best of several) measured in this run,
  interleaved with the training steps so that both see the same machine load;
* training steps (forward + backward + AdamW) of m1 and m2 at sequence length 2048: tokens/s
  and achieved FLOP/s (analytic fm4npp.model.flops, matmul FLOPs only) / matmul FLOP/s —
  target >= 40 % for m2 — and m2 again with its mixers compiled (fm4npp.model.mamba2.
  compile_mixers; the first step, with the compile, is reported apart);
* the chunked SSD scan against the step-by-step recurrence at m2's shapes, forward and
  forward + backward — target >= 20x;
* (full run) m2 step time versus chunk size, which is how the default chunk size was chosen.

  python benchmarks/model.py [--quick] [--threads N]   (chunk sweep 16..128 in the full run)
prints one JSON object as its last line and writes benchmarks/results/model.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from fm4npp.bench_report import emit, results_dir
from fm4npp.model.backbone import FM4NPP
from fm4npp.model.flops import flops_per_token
from fm4npp.model.mamba2 import compile_mixers
from fm4npp.model.presets import get_preset
from fm4npp.model.ssd import ssd_chunked, ssd_recurrent

RESULTS = results_dir(__file__)



def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _cpu_timed(fn) -> float:
    """CPU seconds of this process: with one thread, the work itself, free of the time slices
    other jobs on a shared machine take (wall-clock best-of favours short operations)."""
    t = time.process_time()
    fn()
    return time.process_time() - t


class Matmul:
    """fp32 GEMM timer; `best` is the machine's matmul FLOP/s seen so far."""

    def __init__(self, n: int = 2048):
        self.a, self.b, self.n, self.best = torch.randn(n, n), torch.randn(n, n), n, 0.0
        self.a @ self.b  # warm-up

    best_cpu = 0.0  # the same in process CPU time

    def sample(self, reps: int = 2) -> None:
        for _ in range(reps):
            t = time.process_time()
            wall = _timed(lambda: self.a @ self.b)
            cpu = max(time.process_time() - t, 1e-9)
            self.best = max(self.best, 2 * self.n**3 / wall)
            self.best_cpu = max(self.best_cpu, 2 * self.n**3 / cpu)


def train_steps(preset: str, seq_len: int, batch: int, steps: int, mm: Matmul, chunk_size=None, compiled=False):
    over = {} if chunk_size is None else {"chunk_size": chunk_size}
    cfg = get_preset(preset, **over)
    torch.manual_seed(0)
    model = compile_mixers(FM4NPP(cfg)) if compiled else FM4NPP(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    coords, energy = torch.rand(batch, seq_len, 3), torch.randn(batch, seq_len)
    targets = torch.rand(batch, seq_len, cfg.k, 3)

    def step():
        loss = (model(coords, energy) - targets).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    compile_s = _timed(step)  # warm-up (allocator, oneDNN primitives; the compile if compiled)
    times, cpu_times = [], []
    for _ in range(steps):
        mm.sample(1)
        t = time.process_time()
        times.append(_timed(step))
        cpu_times.append(time.process_time() - t)
    best = min(times)
    flops = flops_per_token(cfg, seq_len) * seq_len * batch
    return {
        "preset": preset, "params": model.num_params(), "seq_len": seq_len, "batch": batch,
        "chunk_size": cfg.chunk_size, "steps_timed": steps, "compiled": compiled,
        "first_step_s": compile_s,
        "step_s_best": best, "step_s_median": sorted(times)[len(times) // 2],
        "tokens_per_s": seq_len * batch / best,
        "flops_per_token": flops_per_token(cfg, seq_len),
        "achieved_flops": flops / best,
        "cpu_s_best": min(cpu_times),  # process CPU seconds per step (all threads)
    }


def scan_speedup(seq_len: int, reps: int) -> dict:
    """Chunked SSD vs recurrence at m2's mixer shapes (h = 4 heads of 64, N = 16)."""
    cfg = get_preset("m2")
    g = torch.Generator().manual_seed(0)
    b, h, p, n = 1, cfg.n_heads, cfg.headdim, cfg.d_state
    leaves = [torch.randn(b, seq_len, h, p, generator=g),
              torch.rand(b, seq_len, h, generator=g) * 0.1,
              -torch.rand(h, generator=g) * 15 - 1,
              torch.randn(b, seq_len, 1, n, generator=g),
              torch.randn(b, seq_len, 1, n, generator=g)]
    leaves = [t.requires_grad_() for t in leaves]

    def fwd(fn, **kw):
        with torch.no_grad():
            fn(*leaves, **kw)

    def fwd_bwd(fn, **kw):
        fn(*leaves, **kw).sum().backward()

    out = {"seq_len": seq_len, "heads": h, "headdim": p, "d_state": n, "chunk_size": cfg.chunk_size,
           "forward": {}, "forward_backward": {}}
    for name, run in (("forward", fwd), ("forward_backward", fwd_bwd)):
        for clock, timer in (("", _timed), ("cpu_", _cpu_timed)):
            chunked = min(timer(lambda: run(ssd_chunked, chunk_size=cfg.chunk_size)) for _ in range(reps))
            recurrent = min(timer(lambda: run(ssd_recurrent)) for _ in range(max(1, reps // 3)))
            out[name] |= {f"{clock}chunked_s": chunked, f"{clock}recurrent_s": recurrent,
                          f"{clock}speedup": recurrent / chunked}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed steps, no chunk sweep")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, 0 = torch's choice (default 1: on a shared, oversubscribed "
                         "machine 2 OpenMP threads stall each other); matmul and model use the same")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 3 if args.quick else 8
    t0 = time.time()

    mm = Matmul()
    mm.sample(3)
    models = {p: train_steps(p, args.seq_len, args.batch, steps, mm) for p in ("m1", "m2")}
    models["m2_compiled"] = train_steps("m2", args.seq_len, args.batch, steps, mm, compiled=True)
    sweep = {}
    if not args.quick:
        for q in (16, 32, 64, 128):
            r = train_steps("m2", args.seq_len, args.batch, 3, mm, chunk_size=q)
            sweep[str(q)] = {k: r[k] for k in ("step_s_best", "cpu_s_best", "tokens_per_s")}
    mm.sample(3)
    for r in models.values():
        r["flops_utilisation"] = r["achieved_flops"] / mm.best
        # Same ratio in CPU time (meaningful with --threads 1): immune to other jobs' slices.
        r["flops_utilisation_cpu"] = (r["achieved_flops"] * r["step_s_best"] / r["cpu_s_best"]) / mm.best_cpu
    scan = scan_speedup(args.seq_len, 3 if args.quick else 6)

    result = {
        "benchmark": "model",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_avg_1min": os.getloadavg()[0]},
        "matmul_flops": mm.best,
        "matmul_flops_cpu": mm.best_cpu,
        "models": models,
        "m2_flops_utilisation": models["m2"]["flops_utilisation"],
        "m2_flops_utilisation_cpu": models["m2"]["flops_utilisation_cpu"],
        "m2_compiled_flops_utilisation": models["m2_compiled"]["flops_utilisation"],
        "m2_compiled_flops_utilisation_cpu": models["m2_compiled"]["flops_utilisation_cpu"],
        "scan_speedup": scan["forward_backward"]["speedup"],
        "scan_speedup_forward": scan["forward"]["speedup"],
        "scan": scan,
        "chunk_sweep_m2": sweep,
        "targets": {"m2_flops_utilisation": 0.40, "scan_speedup": 20.0},
        "seconds": round(time.time() - t0, 1),
    }
    # Wall-clock ratios suffer when other jobs share the cores (a 1-2 s training step is
    # preempted, a 0.2 s matmul is not); the CPU-time ratios are the work itself.
    result["checks"] = {
        "m2_flops_utilisation_cpu>=0.40": result["m2_flops_utilisation_cpu"] >= 0.40,
        "m2_compiled_flops_utilisation_cpu>=0.40": result["m2_compiled_flops_utilisation_cpu"] >= 0.40,
        "m2_compiled_flops_utilisation_wall>=0.40": result["m2_compiled_flops_utilisation"] >= 0.40,
        "scan_speedup_train_wall>=20": scan["forward_backward"]["speedup"] >= 20,
        "scan_speedup_train_cpu>=20": scan["forward_backward"]["cpu_speedup"] >= 20,
        "scan_speedup_forward_wall>=20": scan["forward"]["speedup"] >= 20,
        "scan_speedup_forward_cpu>=20": scan["forward"]["cpu_speedup"] >= 20,
    }
    emit("model", result, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
