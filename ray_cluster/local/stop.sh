#!/usr/bin/env bash
# Stop the Ray cluster that ray_cluster/local/start.sh started (and only that one).
#
# `ray stop` would kill every Ray process on the host, including other users' clusters and
# test sessions; instead signal the process group recorded at start, plus any process whose
# command line names this cluster's session directory (workers Ray moved to their own group).
set -uo pipefail

RAY_DIR=${FM4NPP_RAY_DIR:-/tmp/fm4npp-ray}
STATE="$RAY_DIR/cluster.env"
if [ ! -f "$STATE" ] && [ ! -f "$RAY_DIR/pgid" ]; then
    echo "stop.sh: no cluster state in $RAY_DIR; nothing to stop"
    exit 0
fi
PGID=$(cat "$RAY_DIR/pgid" 2>/dev/null || true)
SESSION=""
# shellcheck disable=SC1090
[ -f "$STATE" ] && SESSION=$(source "$STATE" && echo "${FM4NPP_RAY_SESSION:-}")
[ -n "$SESSION" ] || SESSION=$(readlink -f "$RAY_DIR/session_latest" 2>/dev/null || true)

ours() {
    local pids=""
    [ -n "$PGID" ] && pids+=" $(pgrep -g "$PGID" 2>/dev/null | tr '\n' ' ')"
    [ -n "$SESSION" ] && pids+=" $(pgrep -f -- "$SESSION" 2>/dev/null | tr '\n' ' ')"
    # never ourselves or our parent shell; zombies are already dead (only their parent can
    # reap them)
    for p in $pids; do
        [ "$p" != "$$" ] && [ "$p" != "$PPID" ] || continue
        case "$(ps -o stat= -p "$p" 2>/dev/null)" in Z*|"") continue ;; esac
        echo "$p"
    done | sort -u
}

pids=$(ours)
if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 20); do
        pids=$(ours); [ -z "$pids" ] && break; sleep 0.5
    done
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        for _ in $(seq 20); do [ -z "$(ours)" ] && break; sleep 0.25; done
    fi
fi
rm -f "$STATE" "$RAY_DIR/pgid" "$RAY_DIR/ray_current_cluster"
echo "Ray cluster in $RAY_DIR stopped"
