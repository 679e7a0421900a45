#!/usr/bin/env bash
# The GNN and Exa.TrkX rows of Table 2 beside a study's FM rows: each baseline trained on the
# same labelled events and scored on the same test events as the FM's cells (--backbone gives
# them the FM's serialization), three seeds, logged to the same MLflow experiment; a rerun
# skips what finished. The README's CPU-scale Table 2 used the transfer-cpu study's tpc FM and
# TPC data, then analysis/table2.py (its command is in the README).
#
#   bash scripts/table2_gnn_rows.sh FM_PRETRAINED_DIR DATA_DIR [WORKDIR]
#   (environment: MLFLOW_TRACKING_URI and FM4NPP_HOME of the study; SEEDS, default "0 1 2")
set -euo pipefail
cd "$(dirname "$0")/.."
FM=${1:?pretrained/ directory of the FM whose serialization the rows use}
DATA=${2:?data set directory of the FM rows}
W=${3:-/tmp/fm4npp-table2-gnn}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$W"
for seed in ${SEEDS:-0 1 2}; do
  for spec in pid:sage pid:gat pid:gcn pid:graphconv noise:sage noise:gat noise:gcn noise:graphconv tracking:exatrkx; do
    task=${spec%%:*} model=${spec##*:}
    mark=$W/done-$task-$model-$seed
    [ -e "$mark" ] && continue
    echo "== $(date +%T) $task $model seed $seed"
    $PY -m fm4npp.cli finetune --task "$task" --model "$model" --backbone "$FM" --data "$DATA" \
      --n-train 300 --n-test 150 --epochs 10 --seed "$seed" --set max_steps=300 --set val_events=0 \
      --experiment fm4npp-downstream --storage "$W/store" > "$W/log-$task-$model-$seed" 2>&1
    touch "$mark"
    tail -3 "$W/log-$task-$model-$seed"
  done
done
