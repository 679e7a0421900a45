# shellcheck shell=bash
# Shared by ray_cluster/local/start.sh, stop.sh and scripts/demo.sh (sourced, never run):
# where the local cluster keeps its state, the checks that make that state trustworthy, a
# strict reader for cluster.env, and how to tell this cluster's processes from any others.
#
# Layout of the state dir ($FM4NPP_RAY_DIR, default: see fm4npp_default_ray_dir), mode 0700:
#   cluster.env   0600  `export KEY=VALUE` lines (sourceable by a user; our scripts parse it)
#   pgid          0600  process group = session id of the cluster (setsid at start)
#   start.log     0600  output of `ray start`
#   ray/                Ray's --temp-dir (sessions, logs, unix sockets). Ray chmods it 0777
#                       (ray/_common/utils.py try_make_directory_shared); the 0700 parent is
#                       what keeps other users out of it.

# Ray's longest unix socket path is <dir>/ray/session_<date>_<time>_<usec>_<pid>/sockets/
# dash_MetricsHead (73 bytes after <dir> with a 7-digit pid); AF_UNIX allows 107.
FM4NPP_RAY_DIR_MAX=34
# Every key cluster.env may hold; anything else makes the file invalid.
FM4NPP_STATE_KEYS="RAY_AUTH_MODE RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER RAY_ADDRESS
RAY_DASHBOARD_ADDRESS FM4NPP_RAY_DIR FM4NPP_RAY_SESSION FM4NPP_RAY_PGID FM4NPP_RAY_GCS_PID"
# What a client of the cluster needs in its environment (the rest is for stop.sh).
FM4NPP_CLIENT_KEYS="RAY_AUTH_MODE RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER RAY_ADDRESS
RAY_DASHBOARD_ADDRESS"
declare -A FM4NPP_STATE=()

fm4npp_die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# The python that belongs to the `ray` we run (the venv's), else python3.
fm4npp_python() {
    local ray
    ray=$(command -v "${RAY:-ray}" 2>/dev/null) || true
    if [ -n "$ray" ] && [ -x "$(dirname "$ray")/python" ]; then
        echo "$(dirname "$ray")/python"
    else
        command -v python3
    fi
}

# True if $2 (an octal mode from stat %a) has any of the bits in $1 (octal).
fm4npp_mode_has() { (( 8#$2 & 8#$1 )); }

# Default state dir: per user, short (socket path limit). $XDG_RUNTIME_DIR is per user and
# 0700 by spec; use it only when it really is ours and private.
fm4npp_default_ray_dir() {
    local uid xdg=${XDG_RUNTIME_DIR:-}
    uid=$(id -u)
    if [ -n "$xdg" ] && [[ $xdg =~ ^/[A-Za-z0-9._/-]*$ ]] && [ -d "$xdg" ] && [ ! -L "$xdg" ] \
        && [ -w "$xdg" ] && [ "$(stat -c %u "$xdg")" = "$uid" ] \
        && ! fm4npp_mode_has 077 "$(stat -c %a "$xdg")" \
        && [ $(( ${#xdg} + 11 )) -le "$FM4NPP_RAY_DIR_MAX" ]; then
        echo "${xdg%/}/fm4npp-ray"
    else
        echo "/tmp/fm4npp-ray-$uid"
    fi
}

fm4npp_ray_dir() {
    local dir=${FM4NPP_RAY_DIR:-$(fm4npp_default_ray_dir)}
    [ "$dir" = / ] || dir=${dir%/}
    echo "$dir"
}

# Make DIR the private state dir: create it 0700, or accept an existing one only if it is a
# real directory of ours that nobody else can write, in a parent nobody else can swap it in.
# Otherwise another local user could plant cluster.env / pgid (which stop.sh acts on) or
# replace Ray's sockets. Exits with the reason on failure.
fm4npp_private_dir() {
    local dir=$1 uid owner mode parent powner pmode
    uid=$(id -u)
    case $dir in
        /*) ;;
        *) fm4npp_die "state dir '$dir' must be an absolute path (FM4NPP_RAY_DIR)" ;;
    esac
    # cluster.env stores this path, and stays safe to source only with plain characters
    [[ $dir =~ ^/[A-Za-z0-9._/-]+$ ]] ||
        fm4npp_die "state dir '$dir' may only contain A-Z a-z 0-9 . _ / -"
    [ "${#dir}" -le "$FM4NPP_RAY_DIR_MAX" ] ||
        fm4npp_die "state dir '$dir' is ${#dir} bytes; at most $FM4NPP_RAY_DIR_MAX fit Ray's" \
            "unix socket paths (107 bytes): pick a shorter FM4NPP_RAY_DIR"
    parent=$(dirname "$dir")
    [ -d "$parent" ] || fm4npp_die "parent of the state dir, $parent, does not exist"
    powner=$(stat -L -c %u "$parent"); pmode=$(stat -L -c %a "$parent")
    if [ "$powner" != "$uid" ] && [ "$powner" != 0 ]; then
        fm4npp_die "refusing state dir $dir: its parent $parent belongs to uid $powner"
    fi
    if fm4npp_mode_has 022 "$pmode" && ! fm4npp_mode_has 1000 "$pmode"; then
        fm4npp_die "refusing state dir $dir: its parent $parent is writable by others" \
            "without the sticky bit (mode $pmode), so they could replace it"
    fi
    mkdir -m 700 "$dir" 2>/dev/null || true
    [ ! -L "$dir" ] || fm4npp_die "refusing state dir $dir: it is a symlink"
    [ -d "$dir" ] || fm4npp_die "refusing state dir $dir: not a directory"
    owner=$(stat -c %u "$dir"); mode=$(stat -c %a "$dir")
    [ "$owner" = "$uid" ] ||
        fm4npp_die "refusing state dir $dir: owned by uid $owner, not by you (uid $uid)." \
            "Someone else created it; set FM4NPP_RAY_DIR to a directory of your own"
    if fm4npp_mode_has 022 "$mode"; then
        fm4npp_die "refusing state dir $dir: writable by group/others (mode $mode), so its" \
            "state cannot be trusted. Check its contents, then 'chmod 700 $dir' or remove it"
    fi
    chmod 700 "$dir"
}

# A state file we may read: a regular file (not a link) of ours that only we can write.
fm4npp_private_file() {
    local f=$1 owner mode
    if [ -L "$f" ] || [ ! -f "$f" ]; then
        echo "${0##*/}: refusing $f: not a regular file" >&2
        return 1
    fi
    owner=$(stat -c %u "$f"); mode=$(stat -c %a "$f")
    if [ "$owner" != "$(id -u)" ] || fm4npp_mode_has 022 "$mode"; then
        echo "${0##*/}: refusing $f: owner uid $owner, mode $mode (want yours, 0600)" >&2
        return 1
    fi
}

# Read DIR/cluster.env into FM4NPP_STATE without running any of it: only comments, blank
# lines and `export KEY=VALUE` lines with a known KEY, once each, and a VALUE of the form
# start.sh writes (pids are numbers, addresses 127.0.0.1:port, paths inside DIR). Anything
# else rejects the whole file with a message and returns 1.
fm4npp_read_state() {
    local dir=$1 file=$1/cluster.env line key val n=0 k
    FM4NPP_STATE=()
    fm4npp_private_file "$file" || return 1
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        [[ -z $line || $line == \#* ]] && continue
        if ! [[ $line =~ ^export\ ([A-Z][A-Z0-9_]*)=([A-Za-z0-9._:/-]+)$ ]]; then
            echo "${0##*/}: $file line $n is not 'export KEY=VALUE' with a plain value;" \
                "refusing to use it (it is never executed)" >&2
            FM4NPP_STATE=()
            return 1
        fi
        key=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
        if ! fm4npp_valid_value "$dir" "$key" "$val" || [ -n "${FM4NPP_STATE[$key]+set}" ]; then
            echo "${0##*/}: $file line $n: unexpected, repeated or invalid $key;" \
                "refusing to use the file (it is never executed)" >&2
            FM4NPP_STATE=()
            return 1
        fi
        FM4NPP_STATE[$key]=$val
    done < "$file"
    for k in $FM4NPP_STATE_KEYS; do
        if [ -z "${FM4NPP_STATE[$k]+set}" ]; then
            echo "${0##*/}: $file has no $k; refusing to use it" >&2
            FM4NPP_STATE=()
            return 1
        fi
    done
}

# Is VAL what start.sh writes for KEY (state dir DIR)?
fm4npp_valid_value() {
    local dir=$1 key=$2 val=$3
    case $key in
        RAY_AUTH_MODE) [ "$val" = token ] ;;
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER) [ "$val" = 0 ] ;;
        RAY_ADDRESS) [[ $val == 127.0.0.1:* ]] && fm4npp_is_port "${val#127.0.0.1:}" ;;
        RAY_DASHBOARD_ADDRESS)
            [[ $val == http://127.0.0.1:* ]] && fm4npp_is_port "${val#http://127.0.0.1:}" ;;
        FM4NPP_RAY_DIR) [ "$val" = "$dir" ] ;;
        FM4NPP_RAY_SESSION)
            [[ $val == "$dir"/ray/session_* && ${val#"$dir"/ray/session_} =~ ^[0-9_-]+$ ]] ;;
        FM4NPP_RAY_PGID | FM4NPP_RAY_GCS_PID) [[ $val =~ ^[1-9][0-9]{0,9}$ ]] ;;
        *) return 1 ;;
    esac
}

fm4npp_is_port() { [[ $1 =~ ^[1-9][0-9]{0,4}$ ]] && [ "$1" -le 65535 ]; }

# Export what a client needs from FM4NPP_STATE (after fm4npp_read_state).
fm4npp_export_client_env() {
    local k
    for k in $FM4NPP_CLIENT_KEYS; do
        export "$k=${FM4NPP_STATE[$k]}"
    done
}

# Pids of this cluster's live processes, one per line. TEMP is Ray's temp dir, SID the
# session recorded at start (0: unknown). A process counts only if it runs as us and names
# TEMP: inside session SID through its command line, cwd or an open file (Ray points every
# process's stdout/stderr at the session's logs, workers included, which live in their own
# process groups), or as a child of such a process; outside it only through a --flag, as
# Ray's own daemons do. So a pgid in a stale or planted state file cannot get an unrelated
# process killed.
fm4npp_cluster_pids() {
    "${FM4NPP_PY:-$(fm4npp_python)}" - "$1" "${2:-0}" <<'PYEOF'
import os
import sys

temp, sid = sys.argv[1].rstrip("/"), int(sys.argv[2])
prefixes = {temp + "/", os.path.realpath(temp) + "/"}
uid = os.getuid()


def names_temp(s):  # s is TEMP itself or a path below it
    return any(p in s + "/" for p in prefixes)


skip, p = set(), os.getpid()  # never ourselves or the scripts that called us
while p > 1 and p not in skip:
    skip.add(p)
    try:
        with open(f"/proc/{p}/stat") as f:
            p = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        break

ours, session = set(), {}  # session: pid -> ppid of the unverified ones in SID
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) in skip:
        continue
    d = f"/proc/{name}"
    try:
        if os.stat(d).st_uid != uid:
            continue
        with open(d + "/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):  # dead already; only its parent can reap it
            continue
        with open(d + "/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (OSError, ValueError, IndexError):
        continue
    if any(a.startswith("--") and names_temp(a) for a in argv):
        ours.add(int(name))
        continue
    if sid <= 0 or int(fields[3]) != sid:
        continue
    refs = list(argv)
    try:
        refs.append(os.readlink(d + "/cwd"))
        refs += [os.readlink(f"{d}/fd/{fd}") for fd in os.listdir(d + "/fd")]
    except OSError:
        pass
    if any(names_temp(r) for r in refs):
        ours.add(int(name))
    else:
        session[int(name)] = int(fields[1])
# Helpers Ray's processes fork without any file of ours (the dashboard's multiprocessing
# forkserver and resource tracker): children of verified ones, in the same session.
grown = True
while grown:
    kids = {p for p, ppid in session.items() if ppid in ours}
    grown = bool(kids)
    ours |= kids
    for p in kids:
        del session[p]
print("\n".join(map(str, sorted(ours))))
PYEOF
}

# True if DIR/cluster.env is valid and its GCS is alive and verifiably this cluster's.
fm4npp_cluster_running() {
    local dir=$1
    local pids
    [ -e "$dir/cluster.env" ] || return 1
    fm4npp_read_state "$dir" 2>/dev/null || return 1
    pids=$(fm4npp_cluster_pids "$dir/ray" "${FM4NPP_STATE[FM4NPP_RAY_PGID]}") || return 1
    grep -qx "${FM4NPP_STATE[FM4NPP_RAY_GCS_PID]}" <<< "$pids"
}
