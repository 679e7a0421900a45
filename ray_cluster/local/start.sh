#!/usr/bin/env bash
# Start a one-node Ray cluster on 127.0.0.1 that belongs to this checkout, and record how to
# reach it (and how to stop exactly it) in $FM4NPP_RAY_DIR/cluster.env.
#
#   bash ray_cluster/local/start.sh            # then: source /tmp/fm4npp-ray/cluster.env
#   ray job submit --address "$RAY_DASHBOARD_ADDRESS" --working-dir . -- python studies/...
#   bash ray_cluster/local/stop.sh
#
# Environment (all optional):
#   FM4NPP_RAY_DIR          Ray --temp-dir and state dir (default /tmp/fm4npp-ray; keep it
#                           short: Ray's unix socket paths must fit in 107 bytes)
#   FM4NPP_RAY_PORT         GCS port (default 6379, or a free port if 6379 is taken)
#   FM4NPP_RAY_DASHBOARD_PORT  dashboard / job API port (default 8265, or a free one)
#   FM4NPP_RAY_NUM_CPUS     CPUs the node advertises (default: all)
#   FM4NPP_RAY_OBJECT_STORE_BYTES  object store size (default: Ray's choice)
#   RAY                     the `ray` executable (default: `ray` on PATH)
#
# Token auth (Ray >= 2.59): the head and every client must agree, so RAY_AUTH_MODE=token is
# exported here and written to cluster.env; the token lives in ~/.ray/auth_token.
set -euo pipefail

RAY_DIR=${FM4NPP_RAY_DIR:-/tmp/fm4npp-ray}
RAY=${RAY:-ray}
STATE="$RAY_DIR/cluster.env"
export RAY_AUTH_MODE=token

command -v "$RAY" >/dev/null || { echo "start.sh: '$RAY' not found (activate the venv)" >&2; exit 2; }
PY="$(dirname "$(command -v "$RAY")")/python"
[ -x "$PY" ] || PY=python3

if [ -f "$STATE" ]; then
    # shellcheck disable=SC1090
    (source "$STATE" && kill -0 "$FM4NPP_RAY_GCS_PID" 2>/dev/null) && {
        echo "Ray cluster already running (state: $STATE)"; cat "$STATE"; exit 0; }
    echo "start.sh: stale state file $STATE (cluster gone); starting a new one" >&2
    bash "$(dirname "$0")/stop.sh" >/dev/null 2>&1 || true
fi
mkdir -p "$RAY_DIR"

# A port that is free now; the preferred one when it is.
free_port() {
    "$PY" - "$1" <<'PYEOF'
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

if ! "$RAY" get-auth-token >/dev/null 2>&1; then
    "$RAY" get-auth-token --generate >/dev/null
fi

args=(start --head --node-ip-address 127.0.0.1 --port "$PORT"
      --temp-dir "$RAY_DIR" --include-dashboard true --dashboard-host 127.0.0.1
      --dashboard-port "$DASH_PORT" --dashboard-agent-listen-port "$AGENT_PORT"
      --dashboard-agent-grpc-port "$AGENT_GRPC" --metrics-export-port "$METRICS"
      --ray-client-server-port "$CLIENT_PORT" --runtime-env-agent-port "$RUNTIME_ENV_PORT"
      --disable-usage-stats)
[ -n "${FM4NPP_RAY_NUM_CPUS:-}" ] && args+=(--num-cpus "$FM4NPP_RAY_NUM_CPUS")
[ -n "${FM4NPP_RAY_OBJECT_STORE_BYTES:-}" ] && args+=(--object-store-memory "$FM4NPP_RAY_OBJECT_STORE_BYTES")

# A new session (setsid) makes every process of this cluster share one process group whose
# id we record: stop.sh signals that group (and processes naming our temp dir), never
# `ray stop`, which would kill every Ray on the host.
setsid bash -c 'echo $$ > "$0/pgid"; exec "$@"' "$RAY_DIR" "$RAY" "${args[@]}" \
    > "$RAY_DIR/start.log" 2>&1 || { cat "$RAY_DIR/start.log" >&2; exit 1; }
PGID=$(cat "$RAY_DIR/pgid")

SESSION=$(readlink -f "$RAY_DIR/session_latest")
GCS_PID=$(pgrep -g "$PGID" -f "gcs_server.*$SESSION" | head -n1 || true)
[ -n "$GCS_PID" ] || { echo "start.sh: gcs_server not found; see $RAY_DIR/start.log" >&2; exit 1; }

cat > "$STATE.tmp" <<STATEEOF
export RAY_AUTH_MODE=token
export RAY_ADDRESS=127.0.0.1:$PORT
export RAY_DASHBOARD_ADDRESS=http://127.0.0.1:$DASH_PORT
export FM4NPP_RAY_DIR=$RAY_DIR
export FM4NPP_RAY_SESSION=$SESSION
export FM4NPP_RAY_PGID=$PGID
export FM4NPP_RAY_GCS_PID=$GCS_PID
STATEEOF
mv "$STATE.tmp" "$STATE"

# The job API answers a little after `ray start` returns.
for _ in $(seq 60); do
    # any HTTP answer (401 without the token included) means the server is up
    "$PY" -c "
import urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:$DASH_PORT/api/version', timeout=2)
except urllib.error.HTTPError:
    pass" >/dev/null 2>&1 && break
    sleep 1
done
echo "Ray cluster up: GCS 127.0.0.1:$PORT, dashboard/jobs http://127.0.0.1:$DASH_PORT"
echo "state: $STATE   (source it for RAY_ADDRESS, RAY_DASHBOARD_ADDRESS, RAY_AUTH_MODE)"
