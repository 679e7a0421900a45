"""Save and load a pretrained FM4NPP: config.json + model.safetensors (nothing is unpickled).

config.json holds {"format", "format_version", "model_config", "extra"}; `extra` is whatever
the caller needs to use the weights correctly (the serialization-bin hash, the coordinate and
energy normalisation constants, ...) and must be JSON-serialisable.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fm4npp.files import atomic_path, atomic_write_text

from .backbone import FM4NPP
from .config import ModelConfig

FORMAT = "fm4npp-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_pretrained(model: FM4NPP, directory, extra: dict | None = None) -> Path:
    """Write config.json and model.safetensors into `directory` (created if needed)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "model_config": model.cfg.to_dict(), "extra": extra or {}}
    text = json.dumps(meta, indent=2, sort_keys=True)  # fails early if extra is not JSON
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, tmp, metadata={"format": FORMAT})
    atomic_write_text(directory / CONFIG_FILE, text + "\n")
    return directory


def from_pretrained(directory, map_location: str | torch.device = "cpu") -> tuple[FM4NPP, dict]:
    """Load (model, extra). Any missing, unexpected or mis-shaped tensor is an error."""
    from fm4npp.files import read_safetensors

    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (cfg_path, w_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (not a save_pretrained directory?)")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: format {meta.get('format')!r} version "
                         f"{meta.get('format_version')!r}, expected {FORMAT!r} {FORMAT_VERSION}")
    try:
        cfg = ModelConfig.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{cfg_path}: bad model_config: {exc}") from None

    model = FM4NPP(cfg)
    state = read_safetensors(w_path, device=str(map_location))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
                 f"shape mismatch {shapes}" if shapes else ""]
        raise ValueError(f"{w_path} does not match {cfg_path}: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)
    return model.to(map_location), meta.get("extra", {})
