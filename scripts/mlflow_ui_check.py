"""Look at a study in the real MLflow UI, with a headless Chromium, and check what it shows.

    python scripts/mlflow_ui_check.py --study model_scaling-smoke --out demo/ui

Starts `mlflow ui` on a free loopback port against the tracking URI fm4npp uses (the
MLFLOW_TRACKING_URI variable, else the data home's database), opens three pages in Chromium
(Debian: `apt install chromium`) and writes a screenshot of each to --out:

  experiment.png  the experiment `fm4npp-scaling`: the runs table, the study's parent run with
                  its trials nested under it (expand the parent's "+" to see them)
  parent.png      the study's parent run: its params (grid, data, base config) and, in its
                  Artifacts tab, figure5/ (the figures and figure5.json)
  trial.png       one trial: params (width, layers, N, D, steps, seed), its metrics (the
                  loss curve train_loss and val_mse as histories) and the parent run link

It fails (exit 1) when a page does not render what it should: the rendered DOM of each page is
searched for the study's and the trials' names. Exit 2: no Chromium or no such study.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fm4npp import runs
from fm4npp.analysis.load import EXPERIMENT, load_study, parent_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def render(browser: str, url: str, png: Path) -> str:
    """Screenshot of `url` into `png`; returns the DOM after the page's scripts ran."""
    base = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1600,1000", "--virtual-time-budget=20000"]
    subprocess.run([*base, f"--screenshot={png}", url], check=True, capture_output=True,
                   timeout=120)
    return subprocess.run([*base, "--dump-dom", url], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True, help="study name, e.g. model_scaling-smoke")
    ap.add_argument("--out", required=True, help="directory for the screenshots")
    args = ap.parse_args(argv)
    browser = _chromium()
    if browser is None:
        print("no Chromium found (Debian: apt install chromium)", file=sys.stderr)
        return 2
    parent = parent_run(args.study)
    trials = load_study(args.study)
    if parent is None or not trials:
        print(f"no study {args.study!r} with finished trials in {runs.tracking_uri()}",
              file=sys.stderr)
        return 2
    exp = parent.info.experiment_id
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                           runs.tracking_uri(), "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)  # its server workers die with it (killpg)
    base = f"http://127.0.0.1:{port}"
    failures = []
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            print(f"mlflow ui did not answer on {base}", file=sys.stderr)
            return 1
        trial = trials[-1]
        # MLflow >= 3.5 opens in its GenAI view (traces); the runs live in "Model training"
        ml = "?workflowType=machine_learning"
        pages = {
            "experiment": (f"{base}/#/experiments/{exp}/runs{ml}", [EXPERIMENT, args.study]),
            "parent": (f"{base}/#/experiments/{exp}/runs/{parent.info.run_id}{ml}",
                       [args.study, "grid", "base_config"]),
            "trial": (f"{base}/#/experiments/{exp}/runs/{trial.run_id}{ml}",
                      [trial.key, args.study, "width", "layers", "steps"]),
        }
        for name, (url, must_show) in pages.items():
            dom = render(browser, url, out / f"{name}.png")
            missing = [m for m in must_show if m not in dom]
            status = "ok" if not missing else f"MISSING {missing}"
            print(f"[ui] {name:>10}: {url} -> {out / (name + '.png')}  {status}")
            if missing:
                failures.append(name)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
