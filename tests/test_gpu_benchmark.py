"""benchmarks/gpu.py: its CPU dry mode end to end (Ray Train + MLflow, tiny sizes), and the
pieces that decide its verdicts (the equivalence rule, the peak table) on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import fresh_mlflow_uri

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
RESULTS = ROOT / "benchmarks" / "results" / "gpu.json"


@pytest.fixture
def gpu(monkeypatch):
    """benchmarks/gpu.py as a module, loaded from its file (benchmarks/ is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fm4npp_benchmark_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # registered before it runs: its dataclasses look their module up in sys.modules
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_mamba_triton_only_stub_imports_without_a_path_entry(gpu, monkeypatch):
    # set, then deleted: monkeypatch then removes the stub from sys.modules afterwards
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)
    monkeypatch.delitem(sys.modules, "selective_scan_cuda")
    monkeypatch.setenv("PYTHONPATH", "")
    path_before = list(sys.path)
    if "installed" in gpu.install_selective_scan_stub():
        pytest.skip("the real selective_scan_cuda is installed")
    import selective_scan_cuda

    assert sys.path == path_before  # this process: registered in sys.modules
    stub_dir = os.environ["PYTHONPATH"].split(os.pathsep)[0]  # Ray workers: PYTHONPATH
    assert Path(selective_scan_cuda.__file__).parent == Path(stub_dir)
    with pytest.raises(RuntimeError, match="not built"):
        selective_scan_cuda.fwd  # noqa: B018


def _stat(path: Path):
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


@pytest.mark.slow
def test_dry_run_writes_one_json_and_says_why_parts_were_skipped(tmp_path):
    # Without CUDA the script goes dry by itself (that is what this checks); on a GPU machine
    # --dry keeps this a CPU-sized test.
    auto = not torch.cuda.is_available()
    out = tmp_path / "gpu.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": fresh_mlflow_uri(tmp_path),
           "PYTHONUNBUFFERED": "1"}
    before = _stat(RESULTS)
    cmd = [sys.executable, str(SCRIPT), "--out", str(out)] + ([] if auto else ["--dry"])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _stat(RESULTS) == before, "a dry run must not touch benchmarks/results/gpu.json"

    printed = json.loads(proc.stdout.strip().splitlines()[-1])  # the benchmarks' convention
    assert printed == json.loads(out.read_text())
    r = printed
    assert r["benchmark"] == "gpu" and r["dry"] is True
    assert r["dry_reason"] == ("no CUDA device" if auto else "--dry")

    # the fused path is skipped, and says why
    for key in ("scan", "conv"):
        assert r["fused"][key] == f"skipped: {r['dry_reason']}"
    assert r["fused"]["available"] is False
    eq = r["equivalence"]
    assert eq["status"] == r["fused"]["scan"]
    assert set(eq["tolerances"]["rel_l2"]) == {"fp32", "bf16"}
    for level in ("scan", "model"):
        for precision in ("fp32", "bf16"):
            row = eq[level][precision]
            assert row["fused"].startswith("skipped")
            # the pure path still ran against fp64: fp32 to rounding, bf16 to a few percent
            # (a broken scan is off by order 1)
            errors = row["pure_errors"]
            assert 0 <= max(errors.values()) < (1e-5 if precision == "fp32" else 0.1), errors

    # peak: no table entry for a CPU, with the reason; the matmul rate measured
    assert r["peak"]["table_bf16_dense"] is None
    assert r["peak"]["table_source"].startswith("no bf16 peak in the table")
    assert r["peak"]["measured_matmul_bf16"] > 0

    tp = r["throughput"]
    assert tp["status"] == "ok" and tp["paths"] == ["torch"]
    assert tp["fused"] == r["fused"]["scan"]
    for preset in r["sizes"]["presets"]:
        row = tp["models"][preset]["torch"]
        assert row["tokens_per_s"] > 0 and row["flops_per_token"] > 0
        assert row["mfu_vs_table_peak"] is None and 0 < row["mfu_vs_measured_matmul"] < 1
        assert row["fused_scan_calls_per_step"] == 0

    pt = r["pretrain"]
    assert pt["status"] == "ok", pt
    assert pt["steps"] == r["sizes"]["pretrain"]["steps"] and pt["tokens_per_s"] > 0
    assert pt["mlflow"] == env["MLFLOW_TRACKING_URI"] and pt["mlflow_run_id"]
    assert pt["val_mse"] > 0 and pt["val_baseline_mse"] > 0

    assert r["statuses"] == {"equivalence": eq["status"], "throughput": "ok", "pretrain": "ok"}
    assert r["seconds"] > 0 and r["within_8_min"] is True


def _fake_scan(dt_scale: float = 1.0):
    """mamba_chunk_scan_combined's signature over the project's own scan; dt_scale != 1
    plants a bug (a wrong step size) the equivalence check must catch."""
    from fm4npp.model.ssd import ssd_chunked

    def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, initial_states=None,
                                  return_final_states=False):
        return ssd_chunked(x, (dt * dt_scale).to(x.dtype), A.to(x.dtype), B, C,
                           chunk_size=chunk_size, initial_state=initial_states,
                           return_final_state=return_final_states)

    return types.SimpleNamespace(mamba_chunk_scan_combined=mamba_chunk_scan_combined)


@pytest.mark.parametrize("dt_scale, ok", [(1.0, True), (1.1, False)])
def test_scan_equivalence_passes_a_correct_kernel_and_fails_a_wrong_one(gpu, monkeypatch,
                                                                         dt_scale, ok):
    monkeypatch.setitem(sys.modules, "fake_ssd", _fake_scan(dt_scale))
    monkeypatch.setattr(gpu, "SCAN", ("fake_ssd", "mamba_chunk_scan_combined"))
    cfg = gpu.get_preset("w16")
    out = gpu.scan_equivalence(cfg, batch=2, seq_len=100, device=torch.device("cpu"), fused_ok=True)
    for precision in ("fp32", "bf16"):
        assert out[precision]["ok"] is ok, out[precision]
        assert set(out[precision]["errors"]) == {"y", "final_state", "grad_x", "grad_dt",
                                                 "grad_A", "grad_B", "grad_C"}


def test_peak_table_matches_the_specific_part_first(gpu):
    assert gpu.table_peak("NVIDIA H100 PCIe")[0] == 756e12
    assert gpu.table_peak("NVIDIA H100 80GB HBM3")[0] == 989.4e12
    assert gpu.table_peak("NVIDIA H200")[0] == 989.4e12
    assert gpu.table_peak("NVIDIA H200 NVL")[0] == 835e12
    peak, why = gpu.table_peak("Some Future GPU")
    assert peak is None and "Some Future GPU" in why


def test_missing_mamba_ssm_is_reported_with_its_error(gpu, monkeypatch):
    monkeypatch.setattr(gpu, "SCAN", ("no_such_mamba_module", "mamba_chunk_scan_combined"))
    status = gpu.fused_status(None)
    assert status["available"] is False
    assert status["scan"].startswith("skipped: mamba_ssm not importable: ModuleNotFoundError")
    assert gpu.fused_status("no CUDA device")["scan"] == "skipped: no CUDA device"
