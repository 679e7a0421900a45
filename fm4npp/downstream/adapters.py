"""Saving and loading trained adapters (``finetune --out`` dirs: adapter.safetensors + result.json)."""

from __future__ import annotations

import json
from pathlib import Path

from fm4npp.downstream.config import HIT_GNNS, TRACK_GNNS, FinetuneConfig
from fm4npp.downstream.model import CLASS_NAMES, DownstreamModel, build_source
from fm4npp.files import atomic_path, atomic_write_json


def run_name(cfg: FinetuneConfig, n_train: int) -> str:
    """Stable name of a finetuning run: its MLflow run name and default output dir."""
    return f"finetune-{cfg.task}-{cfg.source}-n{n_train}-{cfg.config_hash()}"


def save_adapter(model, result: dict, out: str | Path) -> None:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # a frozen backbone is not the adapter's (it is named by config and hash); a trained one is
    frozen = isinstance(model, DownstreamModel) and model.source.kind != "scratch"
    sd = {k: v.contiguous() for k, v in model.state_dict().items()
          if not (frozen and k.startswith("source.backbone."))}
    with atomic_path(out / "adapter.safetensors") as tmp:
        save_file(sd, tmp)
    write_json(result, out / "result.json")


def write_json(obj: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj, newline=False, indent=2, default=float)


def load_adapter(directory: str | Path):
    """(model, config, result) from a ``finetune --out`` dir: a DownstreamModel with its feature
    source, or a GNN baseline."""
    from fm4npp.files import read_safetensors

    directory = Path(directory)
    path = directory / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (not a `fm4npp finetune --out` directory?)")
    result = json.loads(path.read_text())
    # adapters saved before whitening existed were trained without it
    cfg = FinetuneConfig.from_dict({"whiten_eps": 0.0, **result["config"]})
    model_cfg = None
    if cfg.source == "fm" or (cfg.source == "scratch" and not cfg.preset):
        from fm4npp.downstream.features import load_backbone

        model_cfg = load_backbone(cfg.backbone)[0].cfg  # either checkpoint layout
    elif cfg.source == "scratch":
        from fm4npp.model.presets import get_preset

        model_cfg = get_preset(cfg.preset)
    state = read_safetensors(directory / "adapter.safetensors")
    weights = state.get("class_weights")
    if cfg.source in HIT_GNNS + TRACK_GNNS:
        from fm4npp.downstream.gnn.run import build_gnn

        model = build_gnn(cfg, len(CLASS_NAMES.get(cfg.task, [])), weights)
        model.load_state_dict(state, strict=True)
        return model, cfg, result
    model = DownstreamModel(cfg.task, build_source(cfg, model_cfg), cfg, weights)
    model.load_state_dict(state, strict=True)
    return model, cfg, result
