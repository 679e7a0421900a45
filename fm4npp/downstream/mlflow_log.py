"""Logging a finetuning result to MLflow (config, flattened metrics, result.json, adapter weights).

Tags (what analysis/table2.py selects and checks runs by): fm4npp.task, .source, .model (the
`--model` name), .model_family, .trainable_params, .backbone_size, .seed, .n_test_events and
the data fingerprint (.data_hash, .bins_hash, .test_events_hash; splits.data_fingerprint), and
.data_detector / .backbone_detector when known (a backbone used on another detector).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fm4npp.downstream.adapters import run_name
from fm4npp.downstream.config import BY_SOURCE, FinetuneConfig, model_info
from fm4npp.overrides import flatten
from fm4npp.spec import SPEC_FILE, RunSpec, from_checkpoint


def flat_metrics(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flat_metrics(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}".replace(" ", "_").replace("+", "")] = float(v)
    return out


def result_tags(cfg: FinetuneConfig, result: dict) -> dict:
    """The tags a finetuning run carries (module docstring), from its config and result."""
    info = model_info(cfg.source)
    fp = result.get("data_fingerprint", {})
    return {"fm4npp.task": cfg.task, "fm4npp.source": cfg.source, "fm4npp.model": BY_SOURCE[cfg.source],
            "fm4npp.model_family": info.family, "fm4npp.trainable_params": str(result["trainable_params"]),
            "fm4npp.backbone_size": result.get("backbone_size", ""), "fm4npp.seed": str(cfg.seed),
            "fm4npp.n_test_events": str(result["n_test_events"]),
            **{f"fm4npp.{k}": v for k, v in fp.items()},
            **{f"fm4npp.{k}": result[k] for k in ("data_detector", "backbone_detector") if result.get(k)}}


def run_spec_of(cfg: FinetuneConfig) -> RunSpec:
    """A downstream run's spec: its config, and its backbone's (fm4npp.spec.from_checkpoint)."""
    if not cfg.backbone:
        return RunSpec(downstream=cfg)
    return dataclasses.replace(from_checkpoint(cfg.backbone), downstream=cfg)


def log_to_mlflow(cfg: FinetuneConfig, result: dict, parent_run_id: str | None = None, name: str = "",
                  out: str | Path | None = None) -> str:
    """One MLflow run with the config, the metrics, result.json and (from ``out``) the adapter
    weights."""
    from fm4npp import runs

    name = name or run_name(cfg, result["n_train_events"])
    # the config's fields by their names, its sections dotted (tracking.d_embed, ...); the
    # whole chain (the backbone's pretraining, serialization and model + this) as run_spec.json
    run_id = runs.start_run(name, params=flatten(cfg), parent_run_id=parent_run_id, experiment=cfg.experiment,
                            storage=cfg.storage or None, tags=result_tags(cfg, result))
    runs.log_dict(run_id, run_spec_of(cfg).to_dict(), SPEC_FILE)
    m = flat_metrics(result["metrics"])
    m.update({k: float(result[k]) for k in ("n_train_events", "trainable_params", "adapter_params",
                                             "backbone_params", "train_seconds")})
    runs.log_metrics(run_id, m, step=0)
    runs.log_dict(run_id, result, "result.json")
    if out is not None:
        runs.client().set_tag(run_id, "fm4npp.adapter_dir", str(out))
        runs.client().log_artifact(run_id, str(Path(out) / "adapter.safetensors"))
    runs.end_run(run_id)
    return run_id
