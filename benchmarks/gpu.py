"""GPU benchmark: fused mamba-ssm kernels against the pure-PyTorch SSD, bf16 throughput and MFU
of m3-m5, and a 200-step m3 pretraining through Ray Train + MLflow. Under 8 minutes on one
H100/H200; a CPU dry mode (tiny sizes) runs anywhere.

1. equivalence: the fused path (mamba_ssm's Triton `mamba_chunk_scan_combined`, and
   causal_conv1d's kernel when installed; fm4npp.model.mamba2 takes it on CUDA when
   `ModelConfig.use_fused_kernels`) against the pure-PyTorch path (fm4npp.model.ssd.ssd_chunked
   and the PyTorch conv), in fp32 and in bf16 (autocast, as pretraining runs), forward and
   backward, at two levels: the scan alone (m3's shapes, with the final state) and the whole
   m3 model on padded events (output and every parameter gradient). Each path's result is
   compared with an fp64 run of the pure-PyTorch path on the same (already rounded) inputs and
   weights; the error is the relative L2 norm ||a - ref|| / ||ref||. A quantity passes when
       fused error <= max(TOL[precision], 3 x the pure-PyTorch path's error at that precision)
   TOL = 2e-3 for fp32: Triton runs fp32 dot products in TF32 (unit roundoff 2^-11 = 4.9e-4)
   unless told otherwise, and mamba_ssm does not, so the fused "fp32" path carries TF32
   rounding; 2e-3 is about 4 TF32 units. TOL = 2e-2 for bf16: unit roundoff 2^-8 = 3.9e-3,
   and a whole bf16 training step rounds every matmul input; 2e-2 is about 5 bf16 units. The
   factor 3 on the pure path's own error admits the rounding that a bf16 step cannot avoid
   (measured on the path the CPU tests trust), with margin for the fused kernels' other
   summation order (chunk 256 vs 32). A real bug (a wrong decay, a lost state between chunks,
   a dropped mask) gives errors of order 0.1-1, far above both bounds. Call counters on the
   fused entry points prove which path ran.
2. throughput: forward + backward + AdamW steps (autocast bf16, fp32 weights, gradient
   clipping, as fm4npp.pretrain.loop) of m3, m4, m5 at sequence length 2048, on the fused and
   the pure-PyTorch path: tokens/s and MFU. Model FLOPs are fm4npp.model.flops.flops_per_token
   (matmul FLOPs, the counter benchmarks/model.py and the training loop use; it counts the SSD
   as ssd_chunked executes it, and the count at the fused chunk size is recorded beside it).
   MFU is given against the device's bf16 dense peak from a table by device name, and against
   the bf16 matmul FLOP/s measured in this run (8192^3 GEMMs).
3. pretrain: a small data set simulated with the project's simulator (benchmarks/pretrain.py's
   `make_data`, cached under the temp dir), then a 200-step m3 run through
   fm4npp.pretrain.run.run_pretraining (Ray Train, one GPU worker, MLflow in a temporary SQLite
   store unless MLFLOW_TRACKING_URI is set): wall time, tokens/s (median of the logged windows),
   its MFU, and val MSE against the constant predictor.

    python benchmarks/gpu.py [--dry] [--out PATH] [--parts equivalence,throughput,pretrain]

Prints one JSON object as its last line and writes benchmarks/results/gpu.json, or --out (a
dry run: <temp dir>/fm4npp-gpu-dry.json unless --out names another file; never the results
directory's gpu.json). Without CUDA it runs dry by itself: tiny
presets, a few steps, the fused path skipped with the reason in the JSON. Every part that
cannot run says why ("skipped: ..."); one that breaks records its error and the rest still
run. Exit status 1 when a part failed a check or broke.

What a GPU machine needs (Linux x86-64, one H100/H200; no internet needed once set up):
  - torch 2.13.0's CUDA build (PyPI's default on Linux x86-64), and nvcc from a CUDA toolkit
    of the same major version as `torch.version.cuda` (CUDA_HOME pointing at it);
  - mamba-ssm and causal-conv1d compiled from source against that torch: PyPI has sdists only,
    and their setup.py otherwise tries to download a prebuilt wheel from GitHub (none exists
    for torch 2.13; offline the attempt fails the install), hence the *_FORCE_BUILD switches;
    --no-build-isolation, or pip compiles them against another torch it fetches itself; the
    build tools installed first, since build isolation is off. The compile (mamba-ssm builds
    its Mamba1 CUDA kernels for every architecture the nvcc knows) takes long: do it ahead, on
    any x86-64 machine with the same CUDA toolkit and Python (compiling needs no GPU).
      python3.11 -m venv .venv && . .venv/bin/activate
      pip install torch==2.13.0 setuptools wheel packaging ninja
      MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=16 \\
          TORCH_CUDA_ARCH_LIST=9.0 pip install --no-build-isolation -e '.[cuda,dev]'
      bash benchmarks/gpu.sh            # = this script under a time limit, log beside the JSON
  - a machine without internet: carry that venv (same path, OS, Python and CUDA), or build a
    wheelhouse where there is internet (`pip wheel --no-build-isolation --no-deps -w wheels
    mamba-ssm causal-conv1d` with the switches above, plus `pip download -d wheels` of
    everything else) and install there with `pip install --no-index --find-links wheels
    --no-build-isolation -e '.[cuda,dev]'`.
  - released mamba-ssm (<= 2.3.2.post1) imports its Mamba1 extension `selective_scan_cuda`
    when imported at all, although fm4npp's Mamba2 path uses only its Triton kernels. On a
    machine where only a pure-Python mamba-ssm could be installed (MAMBA_SKIP_CUDA_BUILD=TRUE
    MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation --no-deps mamba-ssm), pass
    --mamba-triton-only: this script (and its Ray workers) then import a stand-in for that
    extension that raises if anything calls it, and the JSON says so.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from fm4npp.bench_report import emit, results_dir
from fm4npp.model.backbone import FM4NPP
from fm4npp.model.flops import flops_per_token
from fm4npp.model.mamba2 import Mamba2
from fm4npp.model.presets import get_preset
from fm4npp.model.ssd import ssd_chunked

RESULTS = results_dir(__file__)

# Relative L2 error bounds of the fused path against fp64 (module docstring: why these).
TOL = {"fp32": 2e-3, "bf16": 2e-2}
PURE_FACTOR = 3.0

# bf16 dense (no sparsity) tensor-core peak, FLOP/s, from the vendors' datasheets. Matched as
# lower-case substrings of torch.cuda.get_device_name(), most specific first: "NVIDIA H100
# PCIe" must not match the SXM entry "h100" (the SXM parts are named plainly, e.g. "NVIDIA
# H100 80GB HBM3", "NVIDIA H200"), nor "NVIDIA GH200 480GB" the entry "h200".
BF16_PEAK = [
    ("gh200", 989.4e12), ("h200 nvl", 835e12), ("h200", 989.4e12),
    ("h100 nvl", 835e12), ("h100 pcie", 756e12), ("h100", 989.4e12),
    ("b200", 2250e12), ("a100", 312e12), ("l40s", 362e12),
]

# Sizes of a full (GPU) run and of the dry run. The full run's pretraining batch is 64 events
# (~27k points); 1000 events give ~13 passes over the training split in 200 steps.
FULL = dict(equiv_preset="m3", equiv_len=2000, equiv_batch=2, scan_batch=4,
            presets=["m3", "m4", "m5"], seq_len=2048, tokens=65536, warmup=3, steps=10,
            matmul_n=8192, matmul_reps=10,
            pretrain=dict(preset="m3", steps=200, events=1000, batch_size=64, log_every=20,
                          val_every=100, ckpt_every=200, val_events=128, warmup=20,
                          lr=1e-3))  # a short run: above the paper's 2e-4 (for 100k steps)
DRY = dict(equiv_preset="w16", equiv_len=100, equiv_batch=2, scan_batch=2,
           presets=["w16"], seq_len=128, tokens=256, warmup=1, steps=2,
           matmul_n=256, matmul_reps=3,
           pretrain=dict(preset="w8", n_layers=1, steps=4, events=40, batch_size=4, log_every=2,
                         val_every=4, ckpt_every=4, val_events=8, warmup=1))


# -- the fused kernels ------------------------------------------------------------------------
SCAN = ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
CONV = ("causal_conv1d", "causal_conv1d_fn")

STUB = '''"""Stand-in for mamba_ssm's Mamba1 CUDA extension, which was not built (benchmarks/gpu.py
--mamba-triton-only): fm4npp's Mamba2 path uses only mamba_ssm's Triton kernels."""


def __getattr__(name):
    raise RuntimeError("selective_scan_cuda (Mamba1's CUDA extension) was not built; "
                       f"{name} is not available")
'''


def install_selective_scan_stub() -> str:
    """Make `import selective_scan_cuda` succeed here and in Ray workers."""
    if importlib.util.find_spec("selective_scan_cuda") is not None:
        return "not needed: selective_scan_cuda is installed"
    d = Path(tempfile.mkdtemp(prefix="fm4npp-mamba-stub-"))
    path = d / "selective_scan_cuda.py"
    path.write_text(STUB)
    # this process: the stand-in registered by its own file, not by a sys.path entry; Ray
    # workers are fresh interpreters, so they find it by PYTHONPATH (pretrain passes it on)
    spec = importlib.util.spec_from_file_location("selective_scan_cuda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["selective_scan_cuda"] = module
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(d), os.environ.get("PYTHONPATH")]))
    return f"stub in {d}: the Mamba1 CUDA extension was not built (unused by fm4npp)"


def _import(module: str, name: str):
    """(object, None) or (None, 'ErrorType: message')."""
    try:
        return getattr(importlib.import_module(module), name), None
    except Exception as exc:  # ImportError, or a broken CUDA/Triton install raising anything
        return None, f"{type(exc).__name__}: {exc}".strip()


def fused_status(dry_reason: str | None) -> dict:
    """Whether the fused scan and conv can run, with the reason when not."""
    if dry_reason:
        why = f"skipped: {dry_reason}"
        return {"scan": why, "conv": why, "available": False}
    scan, scan_err = _import(*SCAN)
    conv, conv_err = _import(*CONV)
    return {
        "scan": "ok" if scan else f"skipped: mamba_ssm not importable: {scan_err}",
        "conv": ("ok" if conv else f"not used: causal_conv1d not importable: {conv_err} "
                 "(the fused runs use the PyTorch conv)"),
        "available": scan is not None,
    }


@contextlib.contextmanager
def count_calls(module: str, name: str):
    """Count calls of `module.name` (fm4npp.model.mamba2 looks it up at every forward)."""
    calls = {"n": 0}
    try:
        mod = importlib.import_module(module)
    except Exception:
        yield calls
        return
    orig = getattr(mod, name)

    def counted(*a, **kw):
        calls["n"] += 1
        return orig(*a, **kw)

    setattr(mod, name, counted)
    try:
        yield calls
    finally:
        setattr(mod, name, orig)


def set_path(model: torch.nn.Module, fused: bool) -> None:
    """Choose the mixers' path (ModelConfig.use_fused_kernels, read at every forward)."""
    for m in model.modules():
        if isinstance(m, Mamba2):
            m.cfg = dataclasses.replace(m.cfg, use_fused_kernels=fused)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- 1. equivalence ---------------------------------------------------------------------------
def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    den = ref.norm()
    return float((a - ref).norm() / (den if den > 0 else 1.0))


def judge(fused: dict, pure: dict, precision: str, keep: int | None = None) -> dict:
    """Per quantity: the fused error, its bound max(TOL, factor x pure error), pass/fail.
    `keep`: list only that many rows, the closest to their bounds (a model has ~150 tensors),
    and name every failing one."""
    rows = {}
    for k, e in fused.items():
        bound = max(TOL[precision], PURE_FACTOR * pure[k])
        rows[k] = {"fused": e, "pure": pure[k], "bound": bound, "ok": e <= bound}
    ranked = sorted(rows, key=lambda k: rows[k]["fused"] / rows[k]["bound"], reverse=True)
    failing = [k for k in ranked if not rows[k]["ok"]]
    return {"ok": not failing, "compared": len(rows), "failing": failing, "worst": ranked[0],
            "errors": {k: rows[k] for k in ranked[:keep]}}


def scan_equivalence(cfg, batch: int, seq_len: int, device, fused_ok: bool) -> dict:
    """The scan alone: y and the final state, and the gradients of x, dt, A, B, C."""
    g = torch.Generator(device="cpu").manual_seed(0)
    h, p, n, ng = cfg.n_heads, cfg.headdim, cfg.d_state, cfg.ngroups
    dt_init = torch.exp(torch.rand(batch, seq_len, h, generator=g)
                        * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
    base = {"x": torch.randn(batch, seq_len, h, p, generator=g), "dt": dt_init,
            "A": -torch.empty(h).uniform_(cfg.a_init_min, cfg.a_init_max, generator=g),
            "B": torch.randn(batch, seq_len, ng, n, generator=g),
            "C": torch.randn(batch, seq_len, ng, n, generator=g)}
    w_y = torch.randn(batch, seq_len, h, p, generator=g).to(device)
    w_s = torch.randn(batch, h, p, n, generator=g).to(device)
    scan_fn = _import(*SCAN)[0] if fused_ok else None

    def run(path: str, precision: str, exact: bool = False):
        """The scan's outputs and input gradients. x, B, C are rounded to the working dtype and
        dt, A kept fp32 (what the mixer hands over under autocast); `exact` then computes in
        fp64 from those same rounded values: the reference for that precision."""
        low = torch.bfloat16 if precision == "bf16" else torch.float32
        leaves = {}
        for k, v in base.items():
            v = v.to(low if k in ("x", "B", "C") else torch.float32)
            leaves[k] = (v.to(device, torch.float64 if exact else v.dtype)
                         .detach().clone().requires_grad_())  # a fresh leaf per run
        x, dt, A, B, C = (leaves[k] for k in ("x", "dt", "A", "B", "C"))
        if path == "fused":
            y, final = scan_fn(x, dt, A, B, C, chunk_size=cfg.fused_chunk_size,
                               return_final_states=True)
        else:  # what Mamba2.forward does on the PyTorch path
            y, final = ssd_chunked(x, dt.to(x.dtype), A.to(x.dtype), B, C,
                                   chunk_size=cfg.chunk_size, return_final_state=True)
        wdt = torch.float64 if exact else torch.float32
        loss = (y.to(wdt) * w_y.to(wdt)).sum() + (final.to(wdt) * w_s.to(wdt)).sum()
        loss.backward()
        return {"y": y.detach(), "final_state": final.detach(),
                **{f"grad_{k}": v.grad for k, v in leaves.items()}}

    out = {"shapes": {"batch": batch, "seq_len": seq_len, "heads": h, "headdim": p, "d_state": n,
                      "groups": ng, "chunk_torch": cfg.chunk_size, "chunk_fused": cfg.fused_chunk_size}}
    for precision in ("fp32", "bf16"):
        ref = run("pure", precision, exact=True)
        pure = {k: rel_err(v, ref[k]) for k, v in run("pure", precision).items()}
        if scan_fn is None:
            out[precision] = {"pure_errors": pure, "fused": "skipped (see fused.scan)"}
            continue
        fused = {k: rel_err(v, ref[k]) for k, v in run("fused", precision).items()}
        out[precision] = judge(fused, pure, precision)
    return out


def model_equivalence(cfg, batch: int, seq_len: int, device, fused_ok: bool) -> dict:
    """The whole model on padded events: output and every parameter gradient, each path
    against an fp64 copy of the same weights on the pure-PyTorch path."""
    torch.manual_seed(0)
    model = FM4NPP(cfg).to(device)
    ref_model = copy.deepcopy(model).double()
    set_path(ref_model, False)
    g = torch.Generator(device="cpu").manual_seed(1)
    coords = torch.rand(batch, seq_len, 3, generator=g).to(device)
    energy = torch.randn(batch, seq_len, generator=g).to(device)
    targets = torch.rand(batch, seq_len, cfg.k, 3, generator=g).to(device)
    lengths = [seq_len - i * (seq_len // (2 * batch)) for i in range(batch)]  # right padding
    mask = (torch.arange(seq_len)[None] < torch.tensor(lengths)[:, None]).to(device)

    def run(m, dtype, precision):
        m.zero_grad(set_to_none=True)
        with autocast(device, precision):
            pred = m(coords.to(dtype), energy.to(dtype), mask)
        sel = mask[..., None, None].to(dtype)
        loss = ((pred.to(dtype) - targets.to(dtype)).square() * sel).sum() / sel.sum()
        loss.backward()
        return {"output": pred.detach(),
                **{f"grad.{k}": p.grad for k, p in m.named_parameters()}}

    ref = run(ref_model, torch.float64, "fp32")
    out = {"preset_shapes": {"d_model": cfg.d_model, "n_layers": cfg.n_layers,
                             "batch": batch, "seq_len": seq_len, "lengths": lengths}}
    for precision in ("fp32", "bf16"):
        set_path(model, False)
        with count_calls(*SCAN) as pure_calls:
            pure = {k: rel_err(v, ref[k]) for k, v in run(model, torch.float32, precision).items()}
        row = {"pure_fused_calls": pure_calls["n"]}
        if not fused_ok:
            out[precision] = {**row, "pure_errors": {"output": pure["output"],
                                                     "grad_max": max(v for k, v in pure.items() if k != "output")},
                              "fused": "skipped (see fused.scan)"}
            continue
        set_path(model, True)
        with count_calls(*SCAN) as scan_calls, count_calls(*CONV) as conv_calls:
            fused = {k: rel_err(v, ref[k]) for k, v in run(model, torch.float32, precision).items()}
        verdict = judge(fused, pure, precision, keep=6)
        n_mixers = sum(isinstance(m, Mamba2) for m in model.modules())
        verdict["ok"] &= scan_calls["n"] == n_mixers and pure_calls["n"] == 0
        out[precision] = {**row, "fused_scan_calls": scan_calls["n"], "fused_conv_calls": conv_calls["n"],
                          "mixers": n_mixers, **verdict}
    return out


def equivalence(sizes: dict, device, fused: dict) -> dict:
    cfg = get_preset(sizes["equiv_preset"])
    out = {"tolerances": {"rel_l2": TOL, "pure_factor": PURE_FACTOR,
                          "rule": "fused error <= max(TOL[precision], pure_factor x pure error), "
                                  "errors against fp64 pure-PyTorch on the same inputs"},
           "preset": sizes["equiv_preset"]}
    out["scan"] = scan_equivalence(cfg, sizes["scan_batch"], sizes["equiv_len"], device, fused["available"])
    out["model"] = model_equivalence(cfg, sizes["equiv_batch"], sizes["equiv_len"], device, fused["available"])
    if not fused["available"]:
        out["status"] = fused["scan"]
        return out
    verdicts = {f"{level}_{p}": out[level][p]["ok"] for level in ("scan", "model") for p in ("fp32", "bf16")}
    out["checks"] = verdicts
    out["status"] = "ok" if all(verdicts.values()) else "failed"
    return out


# -- 2. peak and throughput -------------------------------------------------------------------
def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def table_peak(name: str):
    for key, flops in BF16_PEAK:
        if key in name.lower():
            return flops, f"datasheet bf16 dense, matched '{key}'"
    return None, f"no bf16 peak in the table for {name!r}"


def measured_matmul(device, n: int, reps: int) -> float:
    """bf16 GEMM FLOP/s: best over 3 rounds of the mean of `reps` n^3 products."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def train_throughput(preset: str, fused: bool, seq_len: int, batch: int, warmup: int,
                     steps: int, device) -> dict:
    """Training steps as fm4npp.pretrain.loop takes them (bf16 autocast, clip, AdamW)."""
    cfg = get_preset(preset, use_fused_kernels=fused)
    torch.manual_seed(0)
    model = FM4NPP(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    coords = torch.rand(batch, seq_len, 3, device=device)
    energy = torch.randn(batch, seq_len, device=device)
    targets = torch.rand(batch, seq_len, cfg.k, 3, device=device)

    def step():
        with autocast(device, "bf16"):
            pred = model(coords, energy)
        loss = (pred.float() - targets).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):  # Triton autotuning and compilation, allocator warm-up
        step()
    times = []
    with count_calls(*SCAN) as calls:
        for _ in range(steps):
            sync(device)
            t = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t)
    median = sorted(times)[len(times) // 2]
    fpt = flops_per_token(cfg, seq_len)
    tokens = batch * seq_len
    return {
        "params": model.num_params(), "batch": batch, "tokens_per_step": tokens,
        "steps_timed": steps, "step_s_median": median, "step_s_best": min(times),
        "tokens_per_s": tokens / median,  # from the median step: steady state, not the luckiest
        "flops_per_token": fpt,
        "flops_per_token_at_fused_chunk": flops_per_token(
            dataclasses.replace(cfg, chunk_size=cfg.fused_chunk_size), seq_len),
        "achieved_flops": fpt * tokens / median,
        "fused_scan_calls_per_step": calls["n"] / steps,
        "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                            if device.type == "cuda" else None),
    }


def mfu(achieved: float | None, peak: dict) -> dict:
    return {key: (achieved / flops if achieved and flops else None) for key, flops in
            (("mfu_vs_table_peak", peak["table_bf16_dense"]),
             ("mfu_vs_measured_matmul", peak["measured_matmul_bf16"]))}


def throughput(sizes: dict, device, fused: dict, peak: dict) -> dict:
    paths = ["fused", "torch"] if fused["available"] else ["torch"]
    out = {"seq_len": sizes["seq_len"], "precision": "bf16 autocast, fp32 weights",
           "paths": paths, "models": {}}
    if not fused["available"]:
        out["fused"] = fused["scan"]
    for preset in sizes["presets"]:
        out["models"][preset] = {}
        for path in paths:
            batch = max(1, sizes["tokens"] // sizes["seq_len"])
            while True:
                try:
                    r = train_throughput(preset, path == "fused", sizes["seq_len"], batch,
                                         sizes["warmup"], sizes["steps"], device)
                    break
                except torch.cuda.OutOfMemoryError:
                    if batch == 1:
                        raise
                batch //= 2  # the row records the batch that fitted
                gc.collect()  # outside the except block: the traceback no longer pins tensors
                torch.cuda.empty_cache()
            out["models"][preset][path] = {**r, **mfu(r["achieved_flops"], peak)}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if len(paths) == 2:
            m = out["models"][preset]
            m["fused_speedup"] = m["fused"]["tokens_per_s"] / m["torch"]["tokens_per_s"]
    out["status"] = "ok"
    return out


# -- 3. pretraining through Ray Train + MLflow ------------------------------------------------
def pretrain(sizes: dict, device, fused: dict, peak: dict, data: str | None) -> dict:
    need = ["ray", "mlflow"] + ([] if data else ["pythia8mc"])
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        return {"status": f"skipped: not importable: {', '.join(missing)}"}
    import ray

    from fm4npp import runs
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.run import build_datasets, run_pretraining
    from pretrain import make_data, tokens_per_s  # benchmarks/pretrain.py

    p = dict(sizes["pretrain"])
    events = p.pop("events")
    work = Path(tempfile.mkdtemp(prefix="fm4npp-bench-gpu-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    t0 = time.perf_counter()
    data_dir = make_data(events, data)
    data_s = time.perf_counter() - t0
    use_gpu = device.type == "cuda"
    cfg = PretrainConfig(data=str(data_dir), use_gpu=use_gpu, workers=1,
                         storage_path=str(work / "runs"), experiment="bench-gpu",
                         run_name=f"gpu-{p['preset']}-s{p['steps']}", **p)
    env = {k: os.environ[k] for k in ("MLFLOW_TRACKING_URI", "PYTHONPATH") if k in os.environ}
    ray.init(num_cpus=None if use_gpu else 2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    try:
        t0 = time.perf_counter()
        datasets = build_datasets(cfg.resolved())  # serialization, timed apart from training
        serialize_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = run_pretraining(cfg, datasets=datasets)
        train_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    tps = tokens_per_s(r["mlflow_run_id"])
    flops_per_point = r["C"] / r["D"] if r["D"] else None  # mean over the run's real events
    achieved = tps * flops_per_point if flops_per_point else None
    return {
        "preset": cfg.preset, "steps": r["steps"], "global_batch_events": cfg.batch_size,
        "use_gpu": use_gpu, "data": str(data_dir), "events_simulated": events,
        "simulate_s": round(data_s, 1), "serialize_s": round(serialize_s, 1),
        "train_wall_s": round(train_s, 1),  # Ray Train start, steps, validation, checkpoints
        "params_N": r["N"], "spacepoints_D": r["D"], "flops_C": r["C"],
        "tokens_per_s": tps,
        "achieved_flops": achieved, **mfu(achieved, peak),
        # the workers import the driver's environment; their kernel calls are not counted
        "fused_kernels": fused["scan"],
        "val_mse": r["val_mse"], "val_baseline_mse": r["val_baseline_mse"],
        "val_over_baseline": r["val_mse_over_baseline"],
        "mlflow": runs.tracking_uri(), "mlflow_run_id": r["mlflow_run_id"], "run_dir": r["run_dir"],
        "status": "ok" if r["steps"] == cfg.steps else "failed",
    }


# -- driver -----------------------------------------------------------------------------------
def environment(device, stub: str | None) -> dict:
    def version(mod):
        try:
            return importlib.import_module(mod).__version__
        except Exception as exc:
            return f"not importable: {type(exc).__name__}: {exc}"

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "device": device_name(device),
           "cpu_count": os.cpu_count(),
           "triton": version("triton"), "mamba_ssm": version("mamba_ssm"),
           "causal_conv1d": version("causal_conv1d")}
    if device.type == "cuda":
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        env["tf32_matmul_in_torch"] = torch.backends.cuda.matmul.allow_tf32
    if stub:
        env["selective_scan_cuda"] = stub
    return env


def section(fn, *args) -> dict:
    """Run one part; a part that breaks records its error, and the others still run."""
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except KeyboardInterrupt:  # gpu.sh's time limit sends SIGINT: keep what was measured
        out = {"status": "error: interrupted (time limit)"}
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        out = {"status": f"error: {type(exc).__name__}: {exc}"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[gpu.py] {fn.__name__}: {out['status']} ({out['seconds']} s)", file=sys.stderr, flush=True)
    return out


PARTS = ("equivalence", "throughput", "pretrain")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="CPU dry mode: tiny sizes, fused path "
                    "skipped (automatic without CUDA)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/gpu.json; a dry run: "
                    "<temp dir>/fm4npp-gpu-dry.json, never benchmarks/results/gpu.json)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--data", help="existing data set for the pretraining (default: simulate)")
    ap.add_argument("--mamba-triton-only", action="store_true",
                    help="mamba-ssm installed without its Mamba1 CUDA extension: import a stand-in "
                         "for it (see the module docstring)")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown --parts {unknown}; choose from {PARTS}")
    t_start = time.perf_counter()

    stub = install_selective_scan_stub() if args.mamba_triton_only else None
    cuda = torch.cuda.is_available()
    dry_reason = "--dry" if args.dry else (None if cuda else "no CUDA device")
    dry = dry_reason is not None
    device = torch.device("cuda" if cuda and not dry else "cpu")
    sizes = DRY if dry else FULL
    fused = fused_status(dry_reason)
    if device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))  # shared small machines

    result = {"benchmark": "gpu", "dry": dry, "dry_reason": dry_reason,
              "environment": environment(device, stub), "fused": fused, "sizes": sizes}
    name = result["environment"]["device"]
    table, source = table_peak(name)
    peak = {"device": name, "table_bf16_dense": table, "table_source": source,
            "measured_matmul_bf16": measured_matmul(device, sizes["matmul_n"], sizes["matmul_reps"]),
            "matmul_n": sizes["matmul_n"]}
    result["peak"] = peak
    for part in PARTS:
        if part not in parts:
            result[part] = {"status": "skipped: not in --parts"}
        elif part == "equivalence":
            result[part] = section(equivalence, sizes, device, fused)
        elif part == "throughput":
            result[part] = section(throughput, sizes, device, fused, peak)
        else:
            result[part] = section(pretrain, sizes, device, fused, peak, args.data)
        if result[part]["status"].startswith("error: interrupted"):
            break
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["within_8_min"] = result["seconds"] < 480
    statuses = {p: result[p]["status"] for p in PARTS if p in result}
    result["statuses"] = statuses
    bad = [p for p, s in statuses.items() if s.startswith(("error", "failed"))]

    out = Path(args.out) if args.out else None
    dry_out = Path(tempfile.gettempdir()) / "fm4npp-gpu-dry.json"
    if dry and (out is None or out.resolve() == (RESULTS / "gpu.json").resolve()):
        out = dry_out  # a dry run's numbers are no GPU results: never in benchmarks/results
    if out is None:
        emit("gpu", result, RESULTS)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"[gpu.py] wrote {out}", file=sys.stderr)
        print(json.dumps(result))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
