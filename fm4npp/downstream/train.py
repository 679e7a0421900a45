"""End-to-end downstream runs (library side of `fm4npp finetune/evaluate`): data -> features -> train -> test metrics.

The pieces live in batching (batches, labels), model (DownstreamModel, build_source), fit (the
training loop), scoring (predict, score), splits (serialization, load_split), adapters (save /
load), mlflow_log and tables (format_table).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import torch

from fm4npp import paths
from fm4npp.downstream.adapters import load_adapter, run_name, save_adapter, write_json
from fm4npp.downstream.batching import task_labels
from fm4npp.downstream.classify import class_weights
from fm4npp.downstream.config import HIT_GNNS, TRACK_GNNS, FinetuneConfig
from fm4npp.downstream.dis import ensure_task_labels
from fm4npp.downstream.fit import train
from fm4npp.downstream.mlflow_log import log_to_mlflow
from fm4npp.downstream.model import CLASS_NAMES, DownstreamModel, build_source
from fm4npp.downstream.scoring import predict, score
from fm4npp.downstream.splits import (data_fingerprint, detectors, event_kinematics, load_split,
                                      serialization, subset)


WHITEN_FIT_POINTS = 200_000  # training points the whitening is fitted on (a seeded sample)


def finetune(cfg: FinetuneConfig, splits: dict | None = None, log=print) -> dict:
    """Train an adapter for ``cfg.task`` on ``cfg.source`` features and score it on the test split.

    ``splits`` (optional) = {"train": events, "val": events, "test": events} bypasses loading
    (studies load once and reuse). Returns the metrics, parameter counts and timings; with
    ``cfg.out`` also writes adapter weights, config and metrics JSON there.
    """
    t_start = time.time()
    model_cfg, backbone, ckpt, extra = None, None, "", {}
    if cfg.backbone:  # also for the baselines: the same serialization as the FM
        from fm4npp.downstream.features import checkpoint_hash, load_backbone, resolve_backbone

        cfg = dataclasses.replace(cfg, backbone=str(resolve_backbone(cfg.backbone, cfg.storage)))

        backbone, extra = load_backbone(cfg.backbone)
        model_cfg, ckpt = backbone.cfg, checkpoint_hash(cfg.backbone)
        if cfg.source != "fm":
            backbone = None  # scratch takes the config only; raw takes nothing
    if cfg.source == "scratch" and cfg.preset:
        from fm4npp.model.presets import get_preset

        model_cfg = get_preset(cfg.preset)
    if splits is None:
        splits = {
            "train": load_split(cfg, cfg.train_split, extra=extra),
            "val": load_split(cfg, cfg.val_split, cfg.val_events, extra) if cfg.val_events else [],
            "test": load_split(cfg, cfg.test_split, cfg.n_test_events, extra),
        }
    train_ev = subset(splits["train"], cfg.n_train_events, cfg.seed)
    val_ev = splits.get("val") or []
    val_ev = val_ev[: cfg.val_events] if cfg.val_events else []
    test_ev = splits["test"][: cfg.n_test_events] if cfg.n_test_events else splits["test"]
    if not train_ev or not test_ev:
        raise ValueError(f"need training and test events, got {len(train_ev)} and {len(test_ev)}")
    ensure_task_labels(cfg, train_ev, val_ev, test_ev)

    weights = None
    if cfg.task in CLASS_NAMES:
        weights = class_weights([task_labels(cfg.task, e) for e in train_ev], len(CLASS_NAMES[cfg.task]),
                                cfg.classifier.class_weight_power)
    fingerprint = data_fingerprint(cfg, test_ev, extra)
    if cfg.source in HIT_GNNS + TRACK_GNNS:
        from fm4npp.downstream.gnn.graph import check_full_turn
        from fm4npp.downstream.gnn.run import n_trainable, predict_gnn, train_gnn

        if cfg.data:
            check_full_turn(serialization(cfg, extra)[1].ranges["phi"])
        t_train = time.time()  # graph building included: it is part of the baseline's cost
        model, fit = train_gnn(cfg, train_ev, val_ev, len(CLASS_NAMES.get(cfg.task, [])), weights, log)
        t_train = time.time() - t_train
        preds = predict_gnn(model, cfg, test_ev)
        trainable = adapter_params = n_trainable(model)
    else:
        model, fit, test_states, t_train = _train_adapter(cfg, model_cfg, backbone, ckpt, train_ev, val_ev,
                                                          test_ev, weights, log)
        preds = predict(model, test_ev, test_states, cfg.batch_size)
        trainable, adapter_params = model.n_trainable(adapter_only=False), model.n_trainable(adapter_only=True)
    kin = event_kinematics(cfg, test_ev) if cfg.task == "tracking" and cfg.data else None
    metrics = score(cfg.task, test_ev, preds, kin)
    result = {
        "task": cfg.task,
        "source": cfg.source,
        "backbone": cfg.backbone,
        "checkpoint_hash": ckpt,
        "n_train_events": len(train_ev),
        "n_test_events": len(test_ev),
        "trainable_params": trainable,
        "adapter_params": adapter_params,
        "backbone_params": sum(p.numel() for p in backbone.parameters()) if backbone is not None else 0,
        # the frozen FM's size, for Table 2's rows: width and depth, and its objective when it
        # is not the paper's (FMs of one size but other objectives are other rows)
        "backbone_size": _backbone_label(model_cfg, extra) if cfg.source == "fm" else "",
        "data_fingerprint": fingerprint,
        # a backbone may serve data of another detector (splits.serialization): which ran on which
        **(detectors(cfg, extra) if cfg.data else {}),
        "metrics": metrics,
        "train": fit,
        "train_seconds": t_train,
        "total_seconds": time.time() - t_start,
        "config": cfg.to_dict(),
    }
    name = run_name(cfg, len(train_ev))
    out = Path(cfg.out) if cfg.out else paths.storage_root(cfg.storage or None) / "finetune" / name
    result["out"] = str(out)
    save_adapter(model, result, out)
    if cfg.experiment:
        result["mlflow_run_id"] = log_to_mlflow(cfg, result, name=name, out=out)
        write_json(result, out / "result.json")
    return result


def _train_adapter(cfg, model_cfg, backbone, ckpt, train_ev, val_ev, test_ev, weights, log):
    """The FM / AdapterOnly / from-scratch path: features (frozen FM states, cached) -> adapter.
    Returns the model, its training record, the test split's states (None unless fm) and the
    training time in seconds (the adapter's loop, not the feature computation)."""
    states = {"train": None, "val": None, "test": None}
    if cfg.source == "fm":
        from fm4npp.downstream.features import FeatureCache, backbone_states

        cache = FeatureCache(cfg.cache_dir or paths.feature_cache(cfg.storage or None), ckpt)
        for name, evs in (("train", train_ev), ("val", val_ev), ("test", test_ev)):
            states[name] = backbone_states(backbone, evs, cache=cache, batch_size=cfg.batch_size, progress=True)
        log(f"feature cache {cache.dir}: {cache.hits} hits, {cache.misses} misses")

    torch.manual_seed(cfg.seed)
    source = build_source(cfg, model_cfg)
    if hasattr(source, "fit_whitening"):
        source.fit_whitening(train_ev, states["train"], WHITEN_FIT_POINTS)
    model = DownstreamModel(cfg.task, source, cfg, weights)
    if cfg.task == "q2":
        model.adapter.fit_target([e["log10_q2"] for e in train_ev])
    t0 = time.time()
    fit = train(model, cfg, train_ev, states["train"], val_ev, states["val"], log=log)
    return model, fit, states["test"], time.time() - t0


def evaluate_adapter(directory: str | Path, data: str = "", split: str = "", n_events: int = 0,
                     batch_size: int = FinetuneConfig.batch_size) -> dict:
    """Score a saved adapter on a split (default: its config's test split and data set)."""
    model, cfg, result = load_adapter(directory)
    if data:
        cfg.data = data
    extra, states, backbone = {}, None, None
    if cfg.backbone:
        from fm4npp.downstream.features import checkpoint_hash, load_backbone

        backbone, extra = load_backbone(cfg.backbone)
        if result.get("checkpoint_hash") and checkpoint_hash(cfg.backbone) != result["checkpoint_hash"]:
            raise ValueError(f"backbone {cfg.backbone} changed since the adapter in {directory} was trained")
    events = load_split(cfg, split or cfg.test_split, n_events, extra)
    ensure_task_labels(cfg, events)
    if cfg.source == "fm":
        from fm4npp.downstream.features import FeatureCache, backbone_states

        cache = FeatureCache(cfg.cache_dir or paths.feature_cache(cfg.storage or None),
                             result["checkpoint_hash"])
        states = backbone_states(backbone, events, cache=cache, batch_size=batch_size)
    if cfg.source in HIT_GNNS + TRACK_GNNS:
        from fm4npp.downstream.gnn.run import predict_gnn

        preds = predict_gnn(model, cfg, events)
    else:
        preds = predict(model, events, states, batch_size)
    kin = event_kinematics(cfg, events) if cfg.task == "tracking" else None
    out = dict(result)
    out.update(metrics=score(cfg.task, events, preds, kin), n_test_events=len(events))
    return out


def compare(base: FinetuneConfig, sources: Sequence[str], splits: dict | None = None, log=print) -> list[dict]:
    """The same task on the same train/test events with several feature sources."""
    if splits is None:
        extra = {}
        if base.backbone:
            from fm4npp.downstream.features import load_backbone, resolve_backbone

            base = dataclasses.replace(base, backbone=str(resolve_backbone(base.backbone,
                                                                           base.storage or None)))
            extra = load_backbone(base.backbone)[1]
        splits = {
            "train": load_split(base, base.train_split, extra=extra),
            "val": load_split(base, base.val_split, base.val_events, extra) if base.val_events else [],
            "test": load_split(base, base.test_split, base.n_test_events, extra),
        }
    results = []
    for src in sources:
        out = str(Path(base.out) / f"{base.task}-{src}") if base.out else ""
        cfg = dataclasses.replace(base, source=src, out=out)
        log(f"== {base.task} / {src}: {len(splits['train'])} train events available")
        results.append(finetune(cfg, splits, log=log))
    return results


def _backbone_label(model_cfg, extra: dict) -> str:
    """``w32-L4``, ``w32-L4 masked-bi``: size, then the objective unless it is the paper's kNN."""
    from fm4npp.pretrain.config import PretrainConfig

    record = extra.get("objective") or {}
    objective = record.get("name", "knn")
    mask = record.get("mask_fraction", PretrainConfig.mask_fraction)
    if mask != PretrainConfig.mask_fraction:
        objective += f"-m{100 * mask:g}"
    direction = "-bi" if model_cfg.bidirectional else ""
    size = f"w{model_cfg.d_model}-L{model_cfg.n_layers}"
    return size if objective == "knn" and not direction else f"{size} {objective}{direction}"
