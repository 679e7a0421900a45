#!/usr/bin/env bash
# Stop the Ray cluster that ray_cluster/local/start.sh started (and only that one).
#
# `ray stop` would kill every Ray process on the host, including other users' clusters and
# test sessions. Instead signal the processes of the session recorded at start, plus Ray
# daemons naming this cluster's temp dir in a flag, each verified to be ours
# (fm4npp_cluster_pids in common.sh): a stale or planted pgid never gets another process
# killed.
set -uo pipefail

# shellcheck source=ray_cluster/local/common.sh
source "$(dirname "$0")/common.sh"
FM4NPP_PY=$(fm4npp_python)
RAY_DIR=$(fm4npp_ray_dir)
STATE=$RAY_DIR/cluster.env
if [ ! -e "$STATE" ] && [ ! -e "$RAY_DIR/pgid" ]; then
    echo "stop.sh: no cluster state in $RAY_DIR; nothing to stop"
    exit 0
fi
fm4npp_private_dir "$RAY_DIR"

SID=0
if [ -e "$STATE" ]; then
    fm4npp_read_state "$RAY_DIR" ||
        fm4npp_die "not stopping anything: fix or remove $STATE"
    SID=${FM4NPP_STATE[FM4NPP_RAY_PGID]}
elif fm4npp_private_file "$RAY_DIR/pgid"; then  # start.sh died before writing cluster.env
    SID=$(head -c 16 "$RAY_DIR/pgid")
    [[ $SID =~ ^[1-9][0-9]*$ ]] || SID=0
fi

ours() { fm4npp_cluster_pids "$RAY_DIR/ray" "$SID"; }

pids=$(ours)
if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    # Most exit within a second; Ray 2.60's gcs_server hangs after SIGTERM ("flushing
    # remaining events"), so do not wait long before SIGKILL.
    for _ in $(seq 10); do
        pids=$(ours); [ -z "$pids" ] && break; sleep 0.5
    done
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        for _ in $(seq 20); do [ -z "$(ours)" ] && break; sleep 0.25; done
    fi
fi
rm -f "$STATE" "$RAY_DIR/pgid" "$RAY_DIR/ray/ray_current_cluster"
echo "Ray cluster in $RAY_DIR stopped"
