"""The ModelConfig a pretraining run builds: its preset, the run's architecture overrides and
what its objective needs (extra heads, a mask token). The downstream rebuilds a checkpoint's
model with it, so a run's weights always load into the model they were trained as."""

from __future__ import annotations

import dataclasses

from fm4npp.model.config import N_SUBSYSTEM_IDS
from fm4npp.model.presets import get_preset
from fm4npp.pretrain.objectives import build_objective, check_backbone


def model_config_for(cfg, k: int):
    """The ModelConfig of PretrainConfig ``cfg`` for data with ``k`` neighbours per point;
    refuses (ValueError) an objective the backbone would leak targets to."""
    mcfg = get_preset(cfg.preset)
    objective = build_objective(cfg)
    changes = {"k": int(k)}
    if cfg.n_layers:
        changes["n_layers"] = cfg.n_layers
    if cfg.n_freq:
        changes["n_freq"] = cfg.n_freq
    if cfg.mup != "preset":
        changes["mup"] = cfg.mup == "on"
    if cfg.bidirectional:
        changes["bidirectional"] = True
    if cfg.subsystem_embedding:
        changes["n_subsystems"] = N_SUBSYSTEM_IDS
    heads = objective.output_heads(int(k))
    if heads:
        changes["output_heads"] = heads
    if objective.mask_token:
        changes["mask_token"] = True
    out = dataclasses.replace(mcfg, **changes)
    check_backbone(objective, out.bidirectional)
    return out
