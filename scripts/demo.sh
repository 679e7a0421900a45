#!/usr/bin/env bash
# `make demo`: the main job end to end on this machine, into DIR (default ./demo).
#
#   the default data set (simulated once) -> data report -> local Ray cluster -> the smoke
#   model-scaling and data-scaling studies via `ray job submit` -> Figure 5 (all three panels)
#   -> the `mlflow ui` command. Prints its wall time (about 9 minutes on 2 cores).
#
# DIR is the data home of the demo (FM4NPP_HOME): data sets, MLflow database, run dirs.
# Rerunning resumes: the data set and finished trials are kept.
# Environment: FM4NPP_DEMO_DATA (use this data set instead of the default one),
# FM4NPP_DEMO_PRESET (default smoke), MLFLOW_TRACKING_URI (default sqlite:///DIR/mlflow.db),
# FM4NPP_RAY_DIR (the local cluster's private state dir, default $XDG_RUNTIME_DIR/fm4npp-ray
# or /tmp/fm4npp-ray-<uid>: see ray_cluster/local/start.sh).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
# The cluster's state dir and the strict cluster.env reader (parsed, never sourced).
# shellcheck source=ray_cluster/local/common.sh
source "$REPO/ray_cluster/local/common.sh"
FM4NPP_RAY_DIR=$(fm4npp_ray_dir)
export FM4NPP_RAY_DIR
# Refuse an unsafe state dir or a bad cluster.env now, not after minutes of simulation.
fm4npp_private_dir "$FM4NPP_RAY_DIR"
if [ -e "$FM4NPP_RAY_DIR/cluster.env" ]; then
    fm4npp_read_state "$FM4NPP_RAY_DIR" || fm4npp_die "fix or remove $FM4NPP_RAY_DIR/cluster.env"
fi
mkdir -p "${1:-demo}"
DIR=$(cd "${1:-demo}" && pwd)
PRESET=${FM4NPP_DEMO_PRESET:-smoke}
export FM4NPP_HOME=$DIR
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$DIR/mlflow.db}
cd "$REPO"

step() { printf '\n==> %s\n' "$*"; }
t0=$SECONDS

if [ -n "${FM4NPP_DEMO_DATA:-}" ]; then
    DATA=$(cd "$FM4NPP_DEMO_DATA" && pwd)
    DATA_ARGS=(--data "$DATA")
else
    step "the default data set (simulated once into $DIR/datasets)"
    DATA=$(python -c 'from fm4npp.pretrain.default_data import ensure_default_dataset as d; print(d())')
    DATA_ARGS=()  # the studies find the same default set themselves
fi
step "data report -> $DIR/report"
fm4npp data report "$DATA" --out "$DIR/report" --max-events 500

step "starting the local Ray cluster ($FM4NPP_RAY_DIR)"
started_here=1
if fm4npp_cluster_running "$FM4NPP_RAY_DIR"; then started_here=0; fi
bash ray_cluster/local/start.sh
# stop it on any exit, but only if this script started it
if [ "$started_here" = 1 ]; then trap 'bash "$REPO/ray_cluster/local/stop.sh"' EXIT; fi
fm4npp_read_state "$FM4NPP_RAY_DIR" || exit 1
fm4npp_export_client_env  # RAY_ADDRESS, RAY_DASHBOARD_ADDRESS, RAY_AUTH_MODE, ...

# The jobs run from a copy of the repo (.gitignore applies, so data and runs stay out of it):
# paths and the MLflow URI passed to them must be absolute.
ENV_JSON=$(printf '{"env_vars": {"MLFLOW_TRACKING_URI": "%s", "FM4NPP_HOME": "%s"}}' \
    "$MLFLOW_TRACKING_URI" "$DIR")
STUDIES=()
for kind in model_scaling data_scaling; do
    step "submitting the $PRESET ${kind/_/-} study (ray job submit)"
    ray job submit --address "$RAY_DASHBOARD_ADDRESS" --working-dir "$REPO" \
        --runtime-env-json "$ENV_JSON" \
        -- python "studies/$kind.py" --preset "$PRESET" "${DATA_ARGS[@]}"
    STUDIES+=(--study "$kind-$PRESET")
done

step "Figure 5 -> $DIR/figures"
# the demo's bar for a scaling point: trained long enough to reach 0.7 of the constant predictor
python analysis/figure5.py "${STUDIES[@]}" --out "$DIR/figures" --max-ratio 0.7

step "done in $((SECONDS - t0)) s"
echo "data:     $DATA"
echo "report:   $DIR/report"
echo "figures:  $DIR/figures/figure5.png (and .pdf, figure5a/b/c, figure5.json, fits.json)"
echo "runs:     $DIR/runs"
echo "Open the runs in the MLflow UI (http://127.0.0.1:5000):"
echo "  mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI"
