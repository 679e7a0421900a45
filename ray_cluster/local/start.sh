#!/usr/bin/env bash
# Start a one-node Ray cluster that belongs to this checkout and to you: every listener on
# 127.0.0.1, token auth, state in a private per-user directory. Records how to reach it (and
# how to stop exactly it) in $FM4NPP_RAY_DIR/cluster.env.
#
#   bash ray_cluster/local/start.sh
#   ray job submit -- python studies/model_scaling.py     # a fresh shell, venv activated
#   bash ray_cluster/local/stop.sh
#
# On Ray's default ports (6379, dashboard 8265) a client needs nothing more: `ray job submit`
# finds the running cluster by itself, reads the token from ~/.ray/auth_token, and the
# activated venv sets RAY_AUTH_MODE=token (Makefile). The job runs in this checkout (the
# cluster's working directory), or in a copy of it with --working-dir.
#
# Environment (all optional):
#   FM4NPP_RAY_DIR          state dir, Ray's --temp-dir is $FM4NPP_RAY_DIR/ray (default
#                           $XDG_RUNTIME_DIR/fm4npp-ray, else /tmp/fm4npp-ray-<uid>; at most
#                           34 bytes: Ray's unix socket paths must fit in 107). Must be yours,
#                           not writable by anyone else; created 0700.
#   FM4NPP_RAY_PORT         GCS port (default 6379, or a free port if 6379 is taken)
#   FM4NPP_RAY_DASHBOARD_PORT  dashboard / job API port (default 8265, or a free one)
#   FM4NPP_RAY_NUM_CPUS     CPUs the node advertises (default: all)
#   FM4NPP_RAY_OBJECT_STORE_BYTES  object store size (default: Ray's choice)
#   RAY                     the `ray` executable (default: `ray` on PATH)
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH  the token, or its file (default ~/.ray/auth_token)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ray_cluster/local/common.sh
source "$HERE/common.sh"
RAY=${RAY:-ray}
command -v "$RAY" >/dev/null || fm4npp_die "'$RAY' not found (activate the venv)"
FM4NPP_PY=$(fm4npp_python)
RAY_DIR=$(fm4npp_ray_dir)
RAY_TEMP=$RAY_DIR/ray
STATE=$RAY_DIR/cluster.env
USER_UMASK=$(umask)
umask 077  # our state files and the token: 0600; Ray itself gets the caller's umask back

fm4npp_private_dir "$RAY_DIR"

if [ -e "$STATE" ] || [ -e "$RAY_DIR/pgid" ]; then
    if [ -e "$STATE" ]; then
        fm4npp_read_state "$RAY_DIR" ||
            fm4npp_die "not starting: fix or remove $STATE (after checking no cluster of yours uses it)"
        if fm4npp_cluster_running "$RAY_DIR"; then
            echo "Ray cluster already running (state: $STATE)"
            cat "$STATE"
            exit 0
        fi
    fi
    echo "${0##*/}: stale state in $RAY_DIR (cluster gone); cleaning up" >&2
    bash "$HERE/stop.sh" >&2 || fm4npp_die "could not clean up $RAY_DIR"
fi

# A port that is free now; the preferred one when it is.
free_port() {
    "$FM4NPP_PY" - "$1" <<'PYEOF'
import socket, sys
want = int(sys.argv[1])
def ok(p):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p)); return True
        except OSError:
            return False
if want and ok(want):
    print(want)
else:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
PYEOF
}
PORT=$(free_port "${FM4NPP_RAY_PORT:-6379}")
DASH_PORT=$(free_port "${FM4NPP_RAY_DASHBOARD_PORT:-8265}")
# Every other port Ray would otherwise take at a fixed default (52365 for the agent, ...):
# pick free ones so this cluster can run beside other Ray instances on the host.
AGENT_PORT=$(free_port 0); AGENT_GRPC=$(free_port 0); METRICS=$(free_port 0)
CLIENT_PORT=$(free_port 0); RUNTIME_ENV_PORT=$(free_port 0)
# The autoscaler's and the dashboard's Prometheus servers have no flag, only these variables
# (ray/autoscaler/_private/constants.py, ray/dashboard/consts.py; defaults 44217, 44227).
AUTOSCALER_METRIC_PORT=$(free_port 0); DASHBOARD_METRIC_PORT=$(free_port 0)
export AUTOSCALER_METRIC_PORT DASHBOARD_METRIC_PORT

# Token auth (Ray >= 2.59): the head and every client must agree, so RAY_AUTH_MODE=token is
# exported here and written to cluster.env. Ray's own `get-auth-token --generate` writes the
# file with the caller's umask (0644 by default): create it ourselves, 0600, exclusively.
export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    TOKEN_FILE=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
    "$FM4NPP_PY" - "$TOKEN_FILE" <<'PYEOF'
import os, secrets, sys
path = sys.argv[1]
os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
except FileExistsError:
    sys.exit(0)
with os.fdopen(fd, "w") as f:
    f.write(secrets.token_hex(32))  # what ray get-auth-token --generate writes
PYEOF
    [ "$(stat -L -c %u "$TOKEN_FILE")" = "$(id -u)" ] ||
        fm4npp_die "refusing token file $TOKEN_FILE: it does not belong to you"
    if fm4npp_mode_has 022 "$(stat -c %a "$(dirname "$TOKEN_FILE")")"; then
        fm4npp_die "refusing token file $TOKEN_FILE: its directory is writable by others"
    fi
    chmod 600 "$TOKEN_FILE"  # also tightens a token an older start.sh or ray.init() wrote 0644
fi

# Loopback only. `--node-ip-address 127.0.0.1` alone is not enough: on Linux `ray start`
# replaces a loopback node IP by the machine's external address
# (ray/_private/services.py resolve_ip_for_localhost -> get_node_ip_address), and then the
# GCS, raylet, object manager and workers bind every interface, the client server and
# runtime-env agent the external address and the dashboard agent 0.0.0.0. With
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (ray/_private/ray_constants.py, Ray's single-machine
# mode) the node IP stays 127.0.0.1 and every component binds 127.0.0.1 only. It also stops
# other machines from joining, which is the point. Clients need it too (else they rewrite
# 127.0.0.1 to the external address and cannot connect): it is in cluster.env.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
args=(start --head --node-ip-address 127.0.0.1 --port "$PORT"
      --temp-dir "$RAY_TEMP" --include-dashboard true --dashboard-host 127.0.0.1
      --dashboard-port "$DASH_PORT" --dashboard-agent-listen-port "$AGENT_PORT"
      --dashboard-agent-grpc-port "$AGENT_GRPC" --metrics-export-port "$METRICS"
      --ray-client-server-port "$CLIENT_PORT" --runtime-env-agent-port "$RUNTIME_ENV_PORT"
      --disable-usage-stats)
[ -n "${FM4NPP_RAY_NUM_CPUS:-}" ] && args+=(--num-cpus "$FM4NPP_RAY_NUM_CPUS")
[ -n "${FM4NPP_RAY_OBJECT_STORE_BYTES:-}" ] && args+=(--object-store-memory "$FM4NPP_RAY_OBJECT_STORE_BYTES")

# A new session (setsid) puts every process of this cluster, workers included, in one
# session whose id (= the leader's pgid) we record: stop.sh looks there (and verifies each
# process), never `ray stop`, which would kill every Ray on the host.
# A job submitted without --working-dir runs in the cluster's working directory: make that
# this checkout, so `ray job submit -- python studies/model_scaling.py` finds the script.
cd "$HERE/../.."
: > "$RAY_DIR/start.log"
# shellcheck disable=SC2016  # $$ and $1.. belong to the inner shell
setsid bash -c 'echo $$ > "$1/pgid"; umask "$2"; shift 2; exec "$@"' _ "$RAY_DIR" "$USER_UMASK" \
    "$RAY" "${args[@]}" > "$RAY_DIR/start.log" 2>&1 || {
    cat "$RAY_DIR/start.log" >&2
    bash "$HERE/stop.sh" >/dev/null 2>&1 || true
    exit 1
}
PGID=$(cat "$RAY_DIR/pgid")
[[ $PGID =~ ^[1-9][0-9]*$ ]] || fm4npp_die "bad pgid file $RAY_DIR/pgid"

SESSION=$(readlink -f "$RAY_TEMP/session_latest")
GCS_PID=$(pgrep -s "$PGID" -f "gcs_server.*$SESSION" | head -n1 || true)
[ -n "$GCS_PID" ] || fm4npp_die "gcs_server not found; see $RAY_DIR/start.log"

# Plain values only (checked again by every reader): still safe to `source` by hand.
cat > "$STATE.tmp" <<STATEEOF
# Written by ray_cluster/local/start.sh. Our scripts parse it (common.sh) and never source it.
export RAY_AUTH_MODE=token
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_ADDRESS=127.0.0.1:$PORT
export RAY_DASHBOARD_ADDRESS=http://127.0.0.1:$DASH_PORT
export FM4NPP_RAY_DIR=$RAY_DIR
export FM4NPP_RAY_SESSION=$SESSION
export FM4NPP_RAY_PGID=$PGID
export FM4NPP_RAY_GCS_PID=$GCS_PID
STATEEOF
mv "$STATE.tmp" "$STATE"
fm4npp_read_state "$RAY_DIR" || fm4npp_die "wrote an invalid $STATE (see above)"

# The job API answers a little after `ray start` returns.
for _ in $(seq 60); do
    # any HTTP answer (401 without the token included) means the server is up
    "$FM4NPP_PY" -c "
import urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:$DASH_PORT/api/version', timeout=2)
except urllib.error.HTTPError:
    pass" >/dev/null 2>&1 && break
    sleep 1
done
echo "Ray cluster up: GCS 127.0.0.1:$PORT, dashboard/jobs http://127.0.0.1:$DASH_PORT"
echo "state: $STATE"
if [ "$DASH_PORT" = 8265 ] && [ "$PORT" = 6379 ]; then
    # Ray's defaults: a client finds this cluster with no address, the token in its default file
    echo "submit from any shell with the venv activated: ray job submit -- python studies/model_scaling.py"
else
    echo "not Ray's default ports: clients need RAY_ADDRESS=127.0.0.1:$PORT (or source $STATE)"
fi
