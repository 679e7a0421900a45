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
