"""Cluster configs: every YAML parses, names the project's Ray version, and the GPU and
shared-storage pieces the studies rely on are there. Fast, no Ray started."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "ray_cluster"


def project_ray_version() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"ray(\[|=)", d)]
    return pin.split("==")[1]


YAMLS = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yml"))


def test_there_is_a_config_per_platform():
    names = {p.relative_to(CLUSTER).parts[0] for p in YAMLS}
    assert {"kuberay", "aws"} <= names
    for d in ("local", "kuberay", "aws", "slurm"):
        assert (CLUSTER / d / "README.md").is_file(), d
    assert (CLUSTER / "slurm" / "study.sbatch").is_file()


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses_and_names_ray_version(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    version = project_ray_version()
    assert version in path.read_text(), f"{path} does not name Ray {version}"
    for d in docs:
        if d.get("kind") in ("RayCluster",):
            assert d["spec"]["rayVersion"] == version
        if d.get("kind") == "RayJob" and "rayClusterSpec" in d["spec"]:
            assert d["spec"]["rayClusterSpec"]["rayVersion"] == version


def _ray_images(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "image" and isinstance(v, str):
                yield v
            else:
                yield from _ray_images(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _ray_images(v)


def test_kuberay_has_gpu_worker_group_token_auth_and_shared_storage():
    (cluster, pvc) = yaml.safe_load_all((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    spec = cluster["spec"]
    assert spec["authOptions"]["mode"] == "token"
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"]
                  .get("nvidia.com/gpu")]
    assert gpu_groups, "no GPU worker group"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert any(m["mountPath"] == "/mnt/shared" for m in mounts)
    # the study entry points write to the shared volume
    jobs = list(yaml.safe_load_all((CLUSTER / "kuberay" / "rayjob.yaml").read_text()))
    assert all("--storage /mnt/shared" in j["spec"]["entrypoint"] for j in jobs)
    assert all("MLFLOW_TRACKING_URI" in j["spec"]["runtimeEnvYAML"] for j in jobs)


def test_images_pin_the_ray_version():
    version = project_ray_version()
    for path in YAMLS:
        for doc in yaml.safe_load_all(path.read_text()):
            for image in _ray_images(doc):
                if image.startswith("postgres"):
                    continue
                assert version in image, f"{path}: image {image} does not pin Ray {version}"


def test_aws_launcher_config():
    cfg = yaml.safe_load((CLUSTER / "aws" / "cluster.yaml").read_text())
    assert cfg["provider"]["type"] == "aws"
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert project_ray_version() in cfg["docker"]["image"]
    assert any("mlflow server" in c for c in cfg["head_start_ray_commands"])
    assert any("RAY_AUTH_MODE=token" in c for c in cfg["worker_start_ray_commands"])


def test_shell_scripts_are_valid_bash_and_never_stop_every_ray():
    scripts = [CLUSTER / "local" / "start.sh", CLUSTER / "local" / "stop.sh",
               CLUSTER / "slurm" / "study.sbatch", ROOT / "scripts" / "demo.sh"]
    for s in scripts:
        subprocess.run(["bash", "-n", str(s)], check=True)
        code = "\n".join(l.split("#", 1)[0] for l in s.read_text().splitlines())
        assert not re.search(r"\bray\s+stop\b", code), f"{s} runs `ray stop`"
    assert project_ray_version() in (CLUSTER / "slurm" / "study.sbatch").read_text()


# --------------------------------------------------------------------- exposure and secrets
# Issue 24: MLflow must not listen beyond loopback without auth, no recipe may carry a default
# password, `--allowed-hosts '*'` is out, and tokens are written under `umask 077`.

RECIPES = sorted(p for p in CLUSTER.rglob("*") if p.is_file())
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _commands(path: Path) -> list[str]:
    """Shell commands in a recipe: YAML string values, script lines joined over `\\`, and
    the code (fenced blocks, `inline spans`) of a README."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        return [s for d in yaml.safe_load_all(text) if d for s in _strings(d)]
    if path.suffix == ".md":
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        spans = re.findall(r"`([^`\n][^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
        return [b.replace("\\\n", " ") for b in blocks] + [" ".join(s.split()) for s in spans]
    return [" ".join(c.split()) for c in text.replace("\\\n", " ").splitlines()]


def _mlflow_servers():
    for path in RECIPES:
        for cmd in _commands(path):
            for m in re.finditer(r"mlflow server\b", cmd):
                yield path, cmd[m.start():]


def test_there_are_mlflow_server_recipes_to_check():
    where = {p.relative_to(CLUSTER).parts[0] for p, _ in _mlflow_servers()}
    assert {"aws", "kuberay", "slurm"} <= where, where


@pytest.mark.parametrize("path,cmd", list(_mlflow_servers()),
                         ids=lambda x: str(x.relative_to(CLUSTER)) if isinstance(x, Path) else "")
def test_mlflow_beyond_loopback_only_behind_auth(path, cmd):
    cmd = cmd.split(";")[0].split("&&")[0]  # this command only
    host = re.search(r"--host[ =]\"?([^\s\"]+)", cmd)
    if host is None or host.group(1) in LOOPBACK:
        return  # mlflow's default is 127.0.0.1
    assert "--app-name basic-auth" in cmd, f"{path}: {cmd[:200]}"


def test_no_default_passwords_or_open_allowed_hosts():
    for path in RECIPES:
        text = path.read_text()
        assert "CHANGE_ME" not in text, path
        assert not re.search(r"password1234", text), path
        # a URI with credentials as a shell fallback is a default password
        assert not re.search(r"\$\{[A-Z_]+:-[a-z]+://[^}]*:[^}]*@", text), path
        assert not re.search(r"--allowed-hosts[ =]['\"]?\*(['\"\s,]|$)", text), path
        assert not re.search(r"--cors-allowed-origins[ =]['\"]?\*", text), path


def test_auth_servers_fail_without_an_admin_password():
    """Every executable recipe that starts MLflow's basic-auth app supplies the admin password
    from a secret and stops with a message when it is missing (older MLflow in our pin range
    shipped a default one)."""
    checked = 0
    for path in RECIPES:
        if path.suffix not in (".yaml", ".yml"):
            continue
        for cmd in _commands(path):
            if "mlflow server" in cmd and "--app-name basic-auth" in cmd:
                checked += 1
                assert "MLFLOW_AUTH_ADMIN_PASSWORD" in cmd, path
                assert re.search(r":\?|exit 1", cmd), f"{path}: no failure on a missing secret"
                assert "MLFLOW_FLASK_SERVER_SECRET_KEY" in cmd, path
    assert checked >= 2


def test_tokens_and_secrets_are_written_under_umask_077():
    writes = 0
    for path in RECIPES:
        for cmd in _commands(path):
            for m in re.finditer(r">\s*\"?[~$\w/.{}-]*(auth_token|credentials|\.ini|secret)",
                                 cmd, flags=re.I):
                if m.group(0).startswith(">&"):
                    continue
                writes += 1
                assert "umask 077" in cmd[:m.start()], f"{path}: {cmd[:m.end()][-200:]}"
    assert writes >= 6  # aws token, credentials, ini; slurm token; kuberay ini; README


def test_kuberay_mlflow_is_internal_with_credentials_from_secrets():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / "mlflow.yaml").read_text()))
    services = [d for d in docs if d["kind"] == "Service"]
    assert services and all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for d in services)
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert {"fm4npp-mlflow", "fm4npp-postgres"} <= policies
    mlflow = [d for d in docs if d["kind"] == "Deployment"][0]
    env = {e["name"]: e for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional"), name  # no Secret, no pod
    # every Ray container gets the MLflow credentials from the Secret, never a runtime env
    cluster = next(yaml.safe_load_all((CLUSTER / "kuberay" / "raycluster.yaml").read_text()))
    jobs = list(yaml.safe_load_all((CLUSTER / "kuberay" / "rayjob.yaml").read_text()))
    specs = [cluster["spec"]] + [j["spec"]["rayClusterSpec"] for j in jobs
                                 if "rayClusterSpec" in j["spec"]]
    for spec in specs:
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            for c in group["template"]["spec"]["containers"]:
                env = {e["name"]: e for e in c.get("env", [])}
                assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"], c["name"]
    assert all("PASSWORD" not in j["spec"]["runtimeEnvYAML"] for j in jobs)


def test_local_scripts_parse_state_never_source_it():
    scripts = [CLUSTER / "local" / "start.sh", CLUSTER / "local" / "stop.sh",
               ROOT / "scripts" / "demo.sh"]
    for s in scripts:
        code = "\n".join(l.split("#", 1)[0] for l in s.read_text().splitlines()
                         if not l.lstrip().startswith("echo "))
        sourced = re.findall(r"(?:^|[;&|(])\s*(?:source|\.)\s+([^;&|\n]+)", code, flags=re.M)
        assert sourced and all(x.strip().endswith('common.sh"') for x in sourced), (s, sourced)
        assert "/tmp/fm4npp-ray\n" not in code and '/tmp/fm4npp-ray"' not in code, s
    start = (CLUSTER / "local" / "start.sh").read_text()
    assert "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in start  # loopback-only node IP
    assert "--dashboard-host 127.0.0.1" in start and "--node-ip-address 127.0.0.1" in start
