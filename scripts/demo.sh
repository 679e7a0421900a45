#!/usr/bin/env bash
# `make demo`: the main job end to end on this machine, into DIR (default ./demo).
#
#   simulate a small data set -> fit serialization bins -> data report -> local Ray cluster
#   -> smoke model-scaling study via `ray job submit` -> Figure 5 -> the `mlflow ui` command
#
# Rerunning resumes: existing data, bins and finished trials are kept.
# Environment: FM4NPP_DEMO_EVENTS (default 200), FM4NPP_DEMO_DATA (use this data set instead
# of simulating), FM4NPP_DEMO_PRESET (default smoke), MLFLOW_TRACKING_URI (default
# sqlite:///DIR/mlflow.db), FM4NPP_RAY_DIR (the local cluster's private state dir, default
# $XDG_RUNTIME_DIR/fm4npp-ray or /tmp/fm4npp-ray-<uid>: see ray_cluster/local/start.sh).
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
EVENTS=${FM4NPP_DEMO_EVENTS:-200}
PRESET=${FM4NPP_DEMO_PRESET:-smoke}
DATA=${FM4NPP_DEMO_DATA:-$DIR/data}
DATA=$(mkdir -p "$DATA" && cd "$DATA" && pwd)
STUDY=model_scaling-$PRESET
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$DIR/mlflow.db}
cd "$REPO"

step() { printf '\n==> %s\n' "$*"; }
t0=$SECONDS

if [ ! -f "$DATA/manifest.json" ]; then
    step "simulating $EVENTS p+p events at 200 GeV into $DATA"
    fm4npp simulate --events "$EVENTS" --seed 1 --out "$DATA"
fi
if [ ! -f "$DATA/bins.json" ]; then
    step "fitting serialization bins"
    fm4npp serialize fit "$DATA" --out "$DATA/bins.json"
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

step "submitting the $PRESET model-scaling study (ray job submit)"
# The job runs from a copy of the repo (.gitignore applies, so data and runs stay out of it):
# paths and the MLflow URI passed to it must be absolute.
ENV_JSON=$(printf '{"env_vars": {"MLFLOW_TRACKING_URI": "%s", "FM4NPP_STORAGE": "%s"}}' \
    "$MLFLOW_TRACKING_URI" "$DIR/runs")
ray job submit --address "$RAY_DASHBOARD_ADDRESS" --working-dir "$REPO" \
    --runtime-env-json "$ENV_JSON" \
    -- python studies/model_scaling.py --preset "$PRESET" --data "$DATA" --storage "$DIR/runs"

step "Figure 5 -> $DIR/figures"
python analysis/figure5.py --study "$STUDY" --out "$DIR/figures"

step "done in $((SECONDS - t0)) s"
echo "data:     $DATA"
echo "report:   $DIR/report"
echo "figures:  $DIR/figures/figure5.png (and .pdf, figure5a/c, fits.json)"
echo "runs:     $DIR/runs"
echo "Open the runs in the MLflow UI (http://127.0.0.1:5000):"
echo "  mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI"
