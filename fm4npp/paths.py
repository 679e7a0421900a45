"""Where fm4npp keeps its state: one data home, one storage root under it.

- data home: ``$FM4NPP_HOME``, else ``~/.fm4npp`` (default MLflow database, default data sets);
- storage root: an explicit flag, else ``$FM4NPP_STORAGE``, else ``<data home>/runs``. Every
  output of a run lives under it: Ray Train run dirs and checkpoints (``<root>/<run name>``),
  the frozen-feature cache (``<root>/feature-cache``), MLflow artifacts of a local tracking
  store (``<root>/mlflow-artifacts/<experiment>``) and study results.

Never relative to the source tree: a non-editable install and a ``ray job submit
--working-dir`` copy of the repository must write to the same place as a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

FEATURE_CACHE = "feature-cache"
MLFLOW_ARTIFACTS = "mlflow-artifacts"


def data_home() -> Path:
    return Path(os.environ.get("FM4NPP_HOME") or "~/.fm4npp").expanduser().resolve()


def storage_root(flag: str | os.PathLike | None = None) -> Path:
    """The storage root: ``flag`` if given, else ``$FM4NPP_STORAGE``, else the data home's runs."""
    chosen = flag or os.environ.get("FM4NPP_STORAGE") or data_home() / "runs"
    return Path(chosen).expanduser().resolve()


def feature_cache(root: str | os.PathLike | None = None) -> Path:
    return storage_root(root) / FEATURE_CACHE


def default_tracking_uri() -> str:
    """An absolute SQLite URI in the data home (Ray moves working directories)."""
    return f"sqlite:///{data_home() / 'mlflow.db'}"
