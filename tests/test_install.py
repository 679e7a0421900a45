"""A non-editable install works from any directory: the wheel carries the detector and facility
files, and nothing looks for state beside the source tree."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_from_an_unrelated_directory(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, cwd=tmp_path, timeout=300)
    (wheel,) = wheels.glob("fm4npp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("fm4npp/sim/detectors/sphenix.toml", "fm4npp/sim/facilities/hera_ep.toml",
                 "fm4npp/study/transfer.py", "fm4npp/analysis/figure5.py", "fm4npp/spec.py"):
        assert want in names, want
    assert not [n for n in names if n.startswith(("tests/", "studies/", "benchmarks/"))]

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    # the installed copy first on the path (dependencies from this venv); state in a data home
    env = {**os.environ, "PYTHONPATH": str(site), "FM4NPP_HOME": str(tmp_path / "home")}
    env.pop("FM4NPP_STORAGE", None)

    def fm4npp(*args):
        return subprocess.run([sys.executable, "-m", "fm4npp.cli", *args], cwd=run_dir, env=env,
                              capture_output=True, text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import fm4npp; print(fm4npp.__file__)"], cwd=run_dir,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where
    out = fm4npp("simulate", "--detector", "sphenix", "--events", "4", "--seed", "3", "--out", "ev", "--quiet")
    assert out.returncode == 0, out.stderr
    assert (run_dir / "ev" / "manifest.json").is_file()
    for kind in ("model_scaling", "transfer"):
        out = fm4npp("study", kind, "--help")
        assert out.returncode == 0 and "--preset" in out.stdout, out.stderr
    assert not (ROOT / "ev").exists() and not list(site.glob("**/datasets"))
