#!/usr/bin/env bash
# benchmarks/gpu.py as one command for a GPU session: a hard time limit, the GPU's state before
# and after, and the log kept beside the JSON. Extra arguments go to gpu.py.
#
#   bash benchmarks/gpu.sh [--parts equivalence,throughput] [--mamba-triton-only] ...
#
# GPU_BENCH_DIR: where gpu.json and gpu.log go (default benchmarks/results);
# GPU_BENCH_LIMIT: seconds before gpu.py gets SIGINT (default 540: the script's target is 480;
#   on SIGINT it stops the part it is in and still writes what it measured), and 30 s after that
#   SIGKILL; PYTHON: the interpreter (default python3, e.g. .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${GPU_BENCH_DIR:-benchmarks/results}
limit=${GPU_BENCH_LIMIT:-540}
mkdir -p "$dir"
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,temperature.gpu \
    --format=csv 2>&1 || echo "nvidia-smi: not available"
} >"$dir/gpu.log" 2>&1
timeout --signal=INT --kill-after=30 "$limit" "${PYTHON:-python3}" benchmarks/gpu.py \
  --out "$dir/gpu.json" "$@" 2>&1 | tee -a "$dir/gpu.log"
rc=${PIPESTATUS[0]}
nvidia-smi --query-gpu=memory.used,clocks.sm,temperature.gpu --format=csv >>"$dir/gpu.log" 2>&1 || true
echo "== gpu.py exit status $rc (124: time limit)" | tee -a "$dir/gpu.log"
exit "$rc"
