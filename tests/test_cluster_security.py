"""The local cluster (ray_cluster/local) is private to the user who starts it: every socket its
processes listen on is on loopback, its state lives in a 0700 per-user directory that the
scripts refuse when anyone else could write it, its state files are parsed (never sourced),
and stop.sh kills only processes it verifies as this cluster's."""

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "ray_cluster" / "local"
BIN = Path(sys.executable).parent
CLIENT_KEYS = ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS",
               "RAY_DASHBOARD_ADDRESS")


def _env(extra=None):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    for k in (*CLIENT_KEYS, "FM4NPP_RAY_DIR"):
        env.pop(k, None)
    return {**env, **(extra or {})}


def _run(script, ray_dir, *args, timeout=60, extra=None):
    return subprocess.run(["bash", str(script), *args], env=_env({"FM4NPP_RAY_DIR": str(ray_dir),
                          **(extra or {})}), capture_output=True, text=True, timeout=timeout)


def _short_dir(prefix="fm4npp-sec-"):
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: socket path limit


def _read_state(path: Path) -> dict[str, str]:
    state = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.removeprefix("export ").split("=", 1)
            state[k] = v
    return state


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _session_pids(sid: int) -> set[int]:
    """Live processes of session ``sid`` (start.sh runs the cluster in its own session)."""
    out = set()
    for d in Path("/proc").glob("[0-9]*"):
        f = _stat_fields(int(d.name))
        if f and f[0] not in ("Z", "X") and int(f[3]) == sid:
            out.add(int(d.name))
    return out


def _decode(hex_addr: str) -> tuple[str, int]:
    """/proc/net/{tcp,udp}[6] "ADDR:PORT" (addresses in host byte order words) -> (ip, port)."""
    addr, port = hex_addr.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)


def _bound_sockets() -> dict[int, tuple[str, str, int]]:
    """inode -> (proto, ip, port) of listening TCP and unconnected (receiving) UDP sockets."""
    out = {}
    for proto, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == state:
                out[int(f[9])] = (proto, *_decode(f[1]))
    return out


def _listeners(pids) -> list[tuple[int, str, str, str, int]]:
    """(pid, process name, proto, ip, port) of every socket the given processes listen on."""
    bound, out = _bound_sockets(), []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in bound:
                    out.append((pid, name, *bound[inode]))
    return out


def _is_loopback(ip: str) -> bool:
    # Ray's gRPC servers (GCS, raylet, workers) bind 127.0.0.1 on a dual-stack IPv6 socket,
    # which the kernel lists as ::ffff:127.0.0.1: the same address, still loopback-only.
    a = ipaddress.ip_address(ip)
    return str(a) in ("127.0.0.1", "::1") or getattr(a, "ipv4_mapped", None) == \
        ipaddress.ip_address("127.0.0.1")


@pytest.fixture(scope="module")
def cluster():
    """A private local cluster: {"state": cluster.env values, "dir": its state dir}."""
    ray_dir = _short_dir()
    env = {"FM4NPP_RAY_PORT": "0", "FM4NPP_RAY_DASHBOARD_PORT": "0", "FM4NPP_RAY_NUM_CPUS": "2"}
    r = _run(LOCAL / "start.sh", ray_dir, timeout=240, extra=env)
    assert r.returncode == 0, r.stdout + r.stderr
    state = _read_state(ray_dir / "cluster.env")
    try:
        yield {"state": state, "dir": ray_dir}
    finally:
        r = _run(LOCAL / "stop.sh", ray_dir, timeout=120)
        left = _session_pids(int(state["FM4NPP_RAY_PGID"]))
        assert r.returncode == 0 and not left, (r.stdout + r.stderr, left)
        shutil.rmtree(ray_dir, ignore_errors=True)


DRIVER = """
import sys, ray
ray.init()
@ray.remote
class Holder:
    def ping(self):
        return 1
@ray.remote
def task():
    return 2
h = Holder.remote()
assert ray.get([h.ping.remote(), task.remote()]) == [1, 2]
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_every_listener_of_the_cluster_is_on_loopback(cluster):
    state = cluster["state"]
    sid = int(state["FM4NPP_RAY_PGID"])
    # A driver with an actor and a task: core-worker servers (driver, workers) listen too.
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env({k: state[k] for k in CLIENT_KEYS}))
    try:
        assert driver.stdout.readline().strip() == "ready", driver.stderr.read()[-3000:]
        listeners = _listeners(_session_pids(sid) | {driver.pid})
    finally:
        driver.stdin.close()
        driver.wait(timeout=60)
    names = {name for _, name, *_ in listeners}
    ports = {port for *_, port in listeners}
    # the scan sees the cluster: GCS, dashboard, raylet, agents and the workers we started
    assert int(state["RAY_ADDRESS"].rsplit(":", 1)[1]) in ports, listeners
    assert int(state["RAY_DASHBOARD_ADDRESS"].rsplit(":", 1)[1]) in ports, listeners
    assert {"gcs_server", "raylet"} <= names, names
    assert any(n.startswith("ray::Holder") for n in names), names
    exposed = [x for x in listeners if not _is_loopback(x[3])]
    assert not exposed, f"listening beyond loopback (pid, name, proto, ip, port): {exposed}"


TRAIN_DRIVER = """
import json, os, sys, time
from pathlib import Path
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

def train_fn(config):
    Path(config["out"]).write_text(json.dumps(
        {"pid": os.getpid(), "port": int(os.environ["MASTER_PORT"])}))
    t0 = time.time()
    while not Path(config["flag"]).exists() and time.time() - t0 < 180:
        time.sleep(0.2)

ray.init()
out, flag, storage = sys.argv[1:4]
TorchTrainer(train_fn, train_loop_config={"out": out, "flag": flag},
             scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
             run_config=RunConfig(storage_path=storage, name="listen")).fit()
"""


@pytest.mark.slow
def test_the_only_listener_beyond_loopback_is_torch_tcpstore_during_training(cluster, tmp_path):
    """Known exception (ray_cluster/local/README.md): Ray Train's torch process group starts a
    torch.distributed TCPStore in the rank-0 worker, and torch binds it to every interface
    whatever MASTER_ADDR (127.0.0.1) says. Exactly that socket, nothing else."""
    state = cluster["state"]
    out, flag = tmp_path / "worker.json", tmp_path / "release"
    driver = subprocess.Popen([sys.executable, "-c", TRAIN_DRIVER, str(out), str(flag),
                               str(tmp_path / "runs")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=_env({k: state[k] for k in CLIENT_KEYS}))
    try:
        t0 = time.time()
        while not out.exists():
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            assert time.time() - t0 < 240, "the Train worker did not start"
            time.sleep(0.5)
        time.sleep(0.5)
        worker = json.loads(out.read_text())
        listeners = _listeners(_session_pids(int(state["FM4NPP_RAY_PGID"])) | {driver.pid})
    finally:
        flag.touch()
        driver.wait(timeout=120)
    exposed = [(pid, proto, ip, port) for pid, _, proto, ip, port in listeners
               if not _is_loopback(ip)]
    assert exposed == [(worker["pid"], "tcp6", "::", worker["port"])], listeners


@pytest.mark.slow
def test_state_and_token_are_private(cluster):
    d = cluster["dir"]
    assert (d.stat().st_mode & 0o777) == 0o700
    for name in ("cluster.env", "pgid", "start.log"):
        assert ((d / name).stat().st_mode & 0o777) == 0o600, name
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not os.environ.get("RAY_AUTH_TOKEN"):
        assert (token.stat().st_mode & 0o777) == 0o600
    # Ray's own temp dir is inside the private one (Ray makes it 0777 itself)
    assert Path(cluster["state"]["FM4NPP_RAY_SESSION"]).parent == d / "ray"


@pytest.mark.slow
def test_state_is_sourceable_and_start_is_idempotent(cluster):
    d, state = cluster["dir"], cluster["state"]
    r = subprocess.run(["bash", "-c", 'source "$1" && echo "$RAY_ADDRESS $FM4NPP_RAY_GCS_PID"',
                        "_", str(d / "cluster.env")], capture_output=True, text=True)
    assert r.stdout.split() == [state["RAY_ADDRESS"], state["FM4NPP_RAY_GCS_PID"]]
    t0 = time.time()
    r = _run(LOCAL / "start.sh", d)
    assert r.returncode == 0 and "already running" in r.stdout, r.stdout + r.stderr
    assert time.time() - t0 < 10
    assert _read_state(d / "cluster.env") == state


# ------------------------------------------------------------------ refusals (no cluster)

def _assert_started_nothing(r, ray_dir, message):
    assert r.returncode != 0, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert not (ray_dir / "ray").exists() and not (ray_dir / "pgid").exists()
    for d in Path("/proc").glob("[0-9]*"):
        try:
            assert str(ray_dir) not in (d / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            pass


def test_start_refuses_a_world_writable_state_dir():
    d = _short_dir()
    try:
        d.chmod(0o777)
        _assert_started_nothing(_run(LOCAL / "start.sh", d), d, "writable by group/others")
        assert not (d / "cluster.env").exists()
    finally:
        shutil.rmtree(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a dir to another user")
def test_start_refuses_a_state_dir_of_another_user():
    d = _short_dir()
    try:
        os.chown(d, 65534, 65534)
        _assert_started_nothing(_run(LOCAL / "start.sh", d), d, "owned by uid 65534")
    finally:
        shutil.rmtree(d)


def test_start_refuses_symlinks_unsafe_parents_and_long_paths():
    base = _short_dir()
    try:
        (base / "real").mkdir(mode=0o700)
        (base / "link").symlink_to(base / "real")
        _assert_started_nothing(_run(LOCAL / "start.sh", base / "link"), base / "real",
                                "is a symlink")
        (base / "open").mkdir()
        (base / "open").chmod(0o777)  # no sticky bit: anyone could swap our dir
        _assert_started_nothing(_run(LOCAL / "start.sh", base / "open" / "d"),
                                base / "open" / "d", "without the sticky bit")
        long = Path("/tmp/" + "x" * 40)
        _assert_started_nothing(_run(LOCAL / "start.sh", long), long, "unix socket paths")
        assert not long.exists()
    finally:
        shutil.rmtree(base)


def _common(func: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f'source "$1" && {func}', "_", str(LOCAL / "common.sh")],
                          env={**_env(), **env}, capture_output=True, text=True)


def test_default_state_dir_is_per_user_and_created_private(tmp_path):
    uid = os.getuid()
    env = {k: v for k, v in _env().items() if k != "XDG_RUNTIME_DIR"}
    r = subprocess.run(["bash", "-c", 'source "$1" && fm4npp_default_ray_dir', "_",
                        str(LOCAL / "common.sh")], env=env, capture_output=True, text=True)
    assert r.stdout.strip() == f"/tmp/fm4npp-ray-{uid}"
    xdg = _short_dir("xdg-")
    try:
        xdg.chmod(0o700)
        assert _common("fm4npp_default_ray_dir", {"XDG_RUNTIME_DIR": str(xdg)}).stdout.strip() \
            == f"{xdg}/fm4npp-ray"
        xdg.chmod(0o777)  # not usable: fall back to the per-user /tmp path
        assert _common("fm4npp_default_ray_dir", {"XDG_RUNTIME_DIR": str(xdg)}).stdout.strip() \
            == f"/tmp/fm4npp-ray-{uid}"
        xdg.chmod(0o700)
        new = xdg / "fm4npp-ray"
        r = _common(f"fm4npp_private_dir {new}", {})
        assert r.returncode == 0, r.stderr
        assert (new.stat().st_mode & 0o777) == 0o700
    finally:
        shutil.rmtree(xdg)


def _valid_state(d: Path, pid: int) -> list[str]:
    session = d / "ray" / "session_2026-01-01_00-00-00_000000_1"
    session.mkdir(parents=True)
    return ["export RAY_AUTH_MODE=token", "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0",
            "export RAY_ADDRESS=127.0.0.1:6379",
            "export RAY_DASHBOARD_ADDRESS=http://127.0.0.1:8265", f"export FM4NPP_RAY_DIR={d}",
            f"export FM4NPP_RAY_SESSION={session}", f"export FM4NPP_RAY_PGID={pid}",
            f"export FM4NPP_RAY_GCS_PID={pid}"]


def _write_private(path: Path, text: str):
    path.write_text(text)
    path.chmod(0o600)


@pytest.mark.parametrize("planted", ["cluster.env", "pgid only"])
def test_stop_does_not_kill_a_planted_process_group(planted):
    """A state file naming someone else's session (stale after a reboot, or planted) must not
    get that session killed: stop.sh verifies each process against the cluster's dir."""
    d = _short_dir()
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        _write_private(d / "pgid", f"{victim.pid}\n")
        if planted == "cluster.env":
            _write_private(d / "cluster.env", "\n".join(_valid_state(d, victim.pid)) + "\n")
        r = _run(LOCAL / "stop.sh", d)
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(0.5)
        assert victim.poll() is None, "stop.sh killed a process that is not the cluster's"
        assert not (d / "pgid").exists() and not (d / "cluster.env").exists()
    finally:
        victim.kill()
        victim.wait()
        shutil.rmtree(d)


def test_stop_refuses_a_world_writable_state_dir():
    d = _short_dir()
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        _write_private(d / "cluster.env", "\n".join(_valid_state(d, victim.pid)) + "\n")
        d.chmod(0o777)
        r = _run(LOCAL / "stop.sh", d)
        assert r.returncode != 0 and "writable by group/others" in r.stderr, r.stderr
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()
        shutil.rmtree(d)


PAYLOADS = [
    "export RAY_ADDRESS=$(touch {mark})",
    "export RAY_ADDRESS=`touch {mark}`",
    "export RAY_ADDRESS=127.0.0.1:6379; touch {mark}",
    "touch {mark}",
    "export LD_PRELOAD={mark}",  # a key start.sh never writes
]


@pytest.mark.parametrize("script", ["ray_cluster/local/start.sh", "ray_cluster/local/stop.sh",
                                    "scripts/demo.sh"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_shell_code_in_the_state_file_is_never_run(script, payload, tmp_path):
    d = _short_dir()
    mark = tmp_path / "executed"
    try:
        lines = _valid_state(d, 999999)
        lines[2] = payload.format(mark=mark)  # replaces the RAY_ADDRESS line
        _write_private(d / "cluster.env", "\n".join(lines) + "\n")
        r = _run(ROOT / script, d, *([str(tmp_path / "demo")] if "demo" in script else []))
        assert r.returncode != 0, r.stdout + r.stderr
        assert "cluster.env" in r.stderr, r.stderr
        assert not mark.exists(), f"{script} executed code from cluster.env"
        assert not (d / "pgid").exists(), f"{script} started a cluster"
    finally:
        shutil.rmtree(d)
