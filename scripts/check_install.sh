#!/usr/bin/env bash
# A non-editable `pip install .` into a fresh venv, then `fm4npp simulate` and a smoke study
# from an unrelated directory: nothing may depend on the source tree being importable or
# being the working directory. About 7 minutes on 2 cores (most of it the study).
#
#   bash scripts/check_install.sh [WORKDIR]     # default: a new temporary directory
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/fm4npp-install-XXXXXX)}
mkdir -p "$WORK"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q torch==2.13.0
"$WORK/venv/bin/pip" install -q "$REPO"
rm -rf "$REPO/build"  # setuptools' in-tree build directory
export FM4NPP_HOME=$WORK/home
cd "$WORK"
"$WORK/venv/bin/fm4npp" simulate --events 30 --seed 3 --out "$WORK/data"
"$WORK/venv/bin/fm4npp" study model_scaling   # smoke preset, default data set, local Ray
echo "installed package works from $WORK"
