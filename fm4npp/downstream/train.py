"""Training and evaluation of downstream adapters (library side of `fm4npp finetune/evaluate`).

An event here is the serialized-event dict of fm4npp.serialize (numpy arrays in serialized
order: coords (N,3), energy (N,), track_id, pid_class, noise, event_id). A feature source
(frozen FM / raw inputs / backbone from scratch) turns a padded batch into point features
(B,L,d); a task adapter (tracking / classifier) sits on top. Only the adapter (and the layer-mix
weights; for "scratch" also the backbone) is trained.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from fm4npp import paths
from fm4npp.downstream.classify import PointClassifier, class_weights, classification_loss, predict_classes
from fm4npp.downstream.config import FinetuneConfig
from fm4npp.downstream.features import FrozenFMSource, pad_points, points_mask
from fm4npp.downstream.tracking import TrackingAdapter, assign_tracks, tracking_loss
from fm4npp.metrics.classification import NOISE_NAMES, PID_NAMES, classification_metrics
from fm4npp.metrics.tracking import tracking_metrics

CLASS_NAMES = {"pid": PID_NAMES, "noise": NOISE_NAMES}
WHITEN_FIT_POINTS = 200_000  # training points the whitening is fitted on (a seeded sample)


def task_labels(task: str, event: dict) -> np.ndarray:
    if task == "pid":
        return np.asarray(event["pid_class"], dtype=np.int64)
    if task == "noise":
        return np.asarray(event["noise"]).astype(np.int64)
    return np.asarray(event["track_id"], dtype=np.int64)


def make_batch(events: Sequence[dict], states: Sequence[torch.Tensor] | None = None,
               crop: int = 0, rng: np.random.Generator | None = None) -> dict:
    """Pad events into a torch batch. ``crop`` > 0 cuts longer events to a random contiguous
    window of that many serialized points (training only: bounds memory of attention)."""
    sl = []
    for ev in events:
        n = len(ev["energy"])
        if crop and n > crop:
            s = int(rng.integers(0, n - crop + 1)) if rng is not None else 0
            sl.append(slice(s, s + crop))
        else:
            sl.append(slice(0, n))
    lengths = [s.stop - s.start for s in sl]
    b = {
        "coords": pad_points([np.asarray(e["coords"], np.float32)[s] for e, s in zip(events, sl)]),
        "energy": pad_points([np.asarray(e["energy"], np.float32)[s] for e, s in zip(events, sl)]),
        "mask": points_mask(lengths),
        "track_id": pad_points([np.asarray(e["track_id"], np.int64)[s] for e, s in zip(events, sl)], -1),
        "pid_class": pad_points([np.asarray(e["pid_class"], np.int64)[s] for e, s in zip(events, sl)], -1),
        "noise": pad_points([np.asarray(e["noise"]).astype(np.int64)[s] for e, s in zip(events, sl)], -1),
    }
    if states is not None:
        b["states"] = pad_points([st[s] for st, s in zip(states, sl)])
    return b


class DownstreamModel(nn.Module):
    """Feature source + task adapter; ``loss`` and ``predict`` speak the batch contract."""

    def __init__(self, task: str, source: nn.Module, cfg: FinetuneConfig, weights: torch.Tensor | None = None):
        super().__init__()
        self.task = task
        self.source = source
        if task == "tracking":
            self.adapter = TrackingAdapter(source.d_out, cfg.tracking)
        else:
            self.adapter = PointClassifier(source.d_out, len(CLASS_NAMES[task]), cfg.classifier)
        self.register_buffer("class_weights", weights if weights is not None else torch.ones(0))

    def forward(self, batch: dict):
        return self.adapter(self.source(batch), batch["mask"])

    def loss(self, batch: dict, out) -> dict:
        if self.task == "tracking":
            return tracking_loss(out, batch["track_id"], batch["noise"], batch["mask"], self.adapter.cfg)
        labels = batch["pid_class"] if self.task == "pid" else batch["noise"]
        w = self.class_weights if self.class_weights.numel() else None
        return {"loss": classification_loss(out, labels, w)}

    def predict(self, batch: dict, out) -> torch.Tensor:
        if self.task == "tracking":
            return assign_tracks(out[-1], batch["mask"])
        return predict_classes(out, batch["mask"])

    def n_trainable(self, adapter_only: bool = True) -> int:
        mod = self.adapter if adapter_only else self
        return sum(p.numel() for p in mod.parameters() if p.requires_grad)


def build_source(cfg: FinetuneConfig, model_cfg=None) -> nn.Module:
    from fm4npp.downstream.baselines import JoinedSource, RawSource, ScratchSource

    if cfg.source == "raw":
        return RawSource(cfg.raw_n_freq, cfg.whiten_eps)
    if cfg.source == "fm":  # n_layers + 1: the embedding is state 0
        fm = FrozenFMSource(cfg.layer_indices(model_cfg.n_layers + 1), model_cfg.d_model, cfg.whiten_eps,
                            cfg.fm_combine)
        return JoinedSource(fm, RawSource(cfg.raw_n_freq, cfg.whiten_eps)) if cfg.fm_with_raw else fm
    return ScratchSource(model_cfg)


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _by_length(events: Sequence[dict], batch_size: int):
    order = np.argsort([len(e["energy"]) for e in events], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def mean_loss(model: DownstreamModel, events, states, batch_size: int) -> float:
    model.eval()
    tot, n = 0.0, 0
    for idx in _by_length(events, batch_size):
        b = make_batch([events[i] for i in idx], [states[i] for i in idx] if states is not None else None)
        tot += float(model.loss(b, model(b))["loss"]) * len(idx)
        n += len(idx)
    return tot / max(n, 1)


def train(model: DownstreamModel, cfg: FinetuneConfig, train_events, train_states=None,
          val_events=None, val_states=None, log=print) -> dict:
    """AdamW with linear warmup + cosine decay; keeps the weights of the best val-loss epoch."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone = [p for n, p in named if n.startswith("source.backbone.")]
    mix = [p for n, p in named if n.endswith("mix.logits")]
    rest = [p for n, p in named if not n.startswith("source.backbone.") and not n.endswith("mix.logits")]
    groups = [{"params": rest, "lr": cfg.lr}]
    if mix:  # no weight decay: it would pull the mix back to uniform
        groups.append({"params": mix, "lr": cfg.mix_lr, "weight_decay": 0.0})
    if backbone:
        groups.append({"params": backbone, "lr": cfg.backbone_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(train_events) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history, best, best_state, step = [], float("inf"), None, 0
    t0 = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for idx in _batches(len(train_events), cfg.batch_size, rng):
            if step >= total:
                break
            b = make_batch([train_events[i] for i in idx],
                           [train_states[i] for i in idx] if train_states is not None else None,
                           crop=cfg.max_points, rng=rng)
            loss = model.loss(b, model(b))["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        rec = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else float("nan")}
        if val_events:
            rec["val_loss"] = mean_loss(model, val_events, val_states, cfg.batch_size)
            if rec["val_loss"] < best:
                best, best_state = rec["val_loss"], copy.deepcopy(model.state_dict())
        rec["elapsed_s"] = time.time() - t0
        history.append(rec)
        log(f"epoch {epoch}: step {step}/{total} train {rec['train_loss']:.4f}"
            + (f" val {rec['val_loss']:.4f}" if "val_loss" in rec else "") + f" ({rec['elapsed_s']:.0f} s)")
        if step >= total:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "steps": step, "best_val_loss": best if val_events else None}


@torch.no_grad()
def predict(model: DownstreamModel, events, states=None, batch_size: int = 8) -> list[np.ndarray]:
    """Per event, the predicted label of each point (serialized order)."""
    model.eval()
    out: list[np.ndarray | None] = [None] * len(events)
    for idx in _by_length(events, batch_size):
        b = make_batch([events[i] for i in idx], [states[i] for i in idx] if states is not None else None)
        pred = model.predict(b, model(b))
        for j, i in enumerate(idx):
            out[i] = pred[j, : len(events[i]["energy"])].numpy()
    return out  # type: ignore[return-value]


def score(task: str, events, preds, kinematics=None) -> dict:
    """The paper's metrics for ``task`` on these events and predictions."""
    if task == "tracking":
        return tracking_metrics([task_labels(task, e) for e in events], preds,
                                [np.asarray(e["noise"]) for e in events], kinematics=kinematics)
    return classification_metrics([task_labels(task, e) for e in events], preds, CLASS_NAMES[task])


# ---------------------------------------------------------------------------------------------
# end-to-end: data -> features -> train -> test metrics


def serialization(cfg: FinetuneConfig, extra: dict | None = None):
    """(SerializeConfig, Bins) for the data set: the bins file (checked against the hash the
    backbone was pretrained with, when the checkpoint records one) and the grid, k, detector and
    energy transform it was fitted with, so adapters see exactly what the FM saw."""
    from fm4npp.serialize.bins import load_bins
    from fm4npp.serialize.config import SerializeConfig

    extra = extra or {}
    path = Path(cfg.bins) if cfg.bins else Path(cfg.data) / "bins.json"
    bins = load_bins(path, expected_hash=extra.get("bins_hash") or None)
    fitted = bins.content["config"]
    kw = {"k": int(fitted["k"]), "n_bins": tuple(fitted["n_bins"]), "detector": fitted["detector"],
          "energy_transform": fitted["energy_transform"]}
    if "serialize" in extra:  # the backbone's whole serialization record: use it as it is
        recorded = SerializeConfig(**extra["serialize"])
        differ = {k: (getattr(recorded, k), v) for k, v in kw.items() if getattr(recorded, k) != v}
        if differ:
            raise ValueError(f"bins {path} do not match the serialization the backbone was "
                             f"pretrained with (backbone, bins): {differ}")
        return recorded, bins
    for key in ("order", "max_points"):  # checkpoints from before the whole record
        if key in extra:
            kw[key] = extra[key]
    return SerializeConfig(**kw), bins


def load_split(cfg: FinetuneConfig, split: str, limit: int = 0, extra: dict | None = None) -> list[dict]:
    """Serialized events of one split (fm4npp.data.pipeline.load_serialized), without the
    pretraining targets (not needed downstream; they are the bulk of the memory)."""
    from fm4npp.data import pipeline

    scfg, bins = serialization(cfg, extra)
    events = pipeline.load_serialized(cfg.data, split, scfg, bins)
    if limit:
        events = events[:limit]
    for e in events:
        e.pop("targets", None)
        e.pop("target_mask", None)
    return events


def subset(events: list[dict], n: int, seed: int) -> list[dict]:
    """The first ``n`` events of a seeded permutation: subsets for growing n are nested."""
    if not n or n >= len(events):
        return events
    order = np.random.default_rng(seed).permutation(len(events))[:n]
    return [events[i] for i in sorted(order)]


def event_kinematics(cfg: FinetuneConfig, events: list[dict]) -> list[dict] | None:
    """Per test event {track_id: (pT, eta)} from the Parquet ``tracks`` column (for the
    restricted comparison). None when the data set cannot provide it."""
    from fm4npp.data.io import read_table
    from fm4npp.metrics.tracking import particle_kinematics

    try:
        table = read_table(cfg.data, columns=["event_id", "tracks"])
    except Exception:  # noqa: BLE001 - restricted efficiency is optional
        return None
    by_id = dict(zip(table.column("event_id").to_pylist(), table.column("tracks").to_pylist()))
    out = []
    for e in events:
        kin = particle_kinematics(by_id.get(int(e["event_id"])) or [])
        tids = np.unique(np.asarray(e["track_id"])[~np.asarray(e["noise"], bool)])
        if any(int(t) not in kin for t in tids if t >= 0):
            return None  # a data set without full track truth (e.g. toy events)
        out.append(kin)
    return out


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

    states = {"train": None, "val": None, "test": None}
    if cfg.source == "fm":
        from fm4npp.downstream.features import FeatureCache, backbone_states

        cache = FeatureCache(cfg.cache_dir or paths.feature_cache(cfg.storage or None), ckpt)
        for name, evs in (("train", train_ev), ("val", val_ev), ("test", test_ev)):
            states[name] = backbone_states(backbone, evs, cache=cache, batch_size=cfg.batch_size, progress=True)
        log(f"feature cache {cache.dir}: {cache.hits} hits, {cache.misses} misses")

    torch.manual_seed(cfg.seed)
    source = build_source(cfg, model_cfg)
    weights = None
    if cfg.task != "tracking":
        weights = class_weights([task_labels(cfg.task, e) for e in train_ev], len(CLASS_NAMES[cfg.task]),
                                cfg.classifier.class_weight_power)
    if hasattr(source, "fit_whitening"):
        source.fit_whitening(train_ev, states["train"], WHITEN_FIT_POINTS)
    model = DownstreamModel(cfg.task, source, cfg, weights)
    t_train = time.time()
    fit = train(model, cfg, train_ev, states["train"], val_ev, states["val"], log=log)
    t_train = time.time() - t_train
    preds = predict(model, test_ev, states["test"], cfg.batch_size)
    kin = event_kinematics(cfg, test_ev) if cfg.task == "tracking" and cfg.data else None
    metrics = score(cfg.task, test_ev, preds, kin)
    result = {
        "task": cfg.task,
        "source": cfg.source,
        "backbone": cfg.backbone,
        "checkpoint_hash": ckpt,
        "n_train_events": len(train_ev),
        "n_test_events": len(test_ev),
        "trainable_params": model.n_trainable(adapter_only=False),
        "adapter_params": model.n_trainable(adapter_only=True),
        "backbone_params": sum(p.numel() for p in backbone.parameters()) if backbone is not None else 0,
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


def run_name(cfg: FinetuneConfig, n_train: int) -> str:
    """Stable name of a finetuning run: its MLflow run name and default output dir."""
    return f"finetune-{cfg.task}-{cfg.source}-n{n_train}-{cfg.config_hash()}"


def save_adapter(model: DownstreamModel, result: dict, out: str | Path) -> None:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("source.backbone.") or model.source.kind == "scratch"}
    tmp = out / f".adapter.{os.getpid()}.tmp"
    save_file(sd, str(tmp))
    os.replace(tmp, out / "adapter.safetensors")
    write_json(result, out / "result.json")


def write_json(obj: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def flat_metrics(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flat_metrics(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}".replace(" ", "_").replace("+", "")] = float(v)
    return out


def log_to_mlflow(cfg: FinetuneConfig, result: dict, parent_run_id: str | None = None, name: str = "",
                  out: str | Path | None = None) -> str:
    """One MLflow run with the config, the metrics, result.json and (from ``out``) the adapter
    weights."""
    from fm4npp import runs

    name = name or run_name(cfg, result["n_train_events"])
    run_id = runs.start_run(name, params=cfg.to_dict(), parent_run_id=parent_run_id, experiment=cfg.experiment,
                            storage=cfg.storage or None,
                            tags={"fm4npp.task": cfg.task, "fm4npp.source": cfg.source})
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


def format_table(results: Sequence[dict]) -> str:
    """A Table-2-style text table: one row per (task, model)."""
    lines = []
    by_task: dict[str, list] = {}
    for r in results:
        by_task.setdefault(r["task"], []).append(r)
    for task, rs in by_task.items():
        if task == "tracking":
            lines.append(f"{'Track finding':<14}{'#trnbl para.':>14}{'ARI(ev)':>9}{'ARI(pool)':>10}"
                         f"{'eff.':>9}{'purity':>9}{'sp.eff.':>9}{'sp.pur.':>9}{'eff(restr)':>11}")
            for r in rs:
                m = r["metrics"]
                lines.append(f"{_label(r):<14}{_params(r):>14}{m['ari_event_mean']:>9.4f}{m['ari_pooled']:>10.4f}"
                             f"{100 * m['efficiency']:>8.2f}%{100 * m['purity']:>8.2f}%"
                             f"{100 * m['spacepoint_efficiency']:>8.2f}%{100 * m['spacepoint_purity']:>8.2f}%"
                             f"{100 * m.get('restricted_efficiency', float('nan')):>10.2f}%")
        else:
            lines.append(f"{('PID' if task == 'pid' else 'Noise tagging'):<14}{'#trnbl para.':>14}"
                         f"{'acc.':>9}{'recall':>9}{'pre.':>9}")
            for r in rs:
                m = r["metrics"]
                lines.append(f"{_label(r):<14}{_params(r):>14}{m['accuracy']:>9.4f}"
                             f"{m['macro_recall']:>9.4f}{m['macro_precision']:>9.4f}")
        lines.append("")
    return "\n".join(lines)


def _label(r: dict) -> str:
    name = {"fm": "FM4NPP", "raw": "AdapterOnly", "scratch": "FromScratch"}.get(r["source"], r["source"])
    return f"{name}({r['backbone']})" if r["source"] == "fm" and r.get("backbone") and "/" not in r["backbone"] else name


def _params(r: dict) -> str:
    return f"{r['trainable_params'] / 1e6:.3f}M"


def load_adapter(directory: str | Path) -> tuple[DownstreamModel, FinetuneConfig, dict]:
    """Rebuild a trained adapter (and its feature source) from a ``finetune --out`` dir."""
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
    model = DownstreamModel(cfg.task, build_source(cfg, model_cfg), cfg, weights)
    model.load_state_dict(state, strict=True)
    return model, cfg, result


def evaluate_adapter(directory: str | Path, data: str = "", split: str = "", n_events: int = 0,
                     batch_size: int = 8) -> dict:
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
    if cfg.source == "fm":
        from fm4npp.downstream.features import FeatureCache, backbone_states

        cache = FeatureCache(cfg.cache_dir or paths.feature_cache(cfg.storage or None),
                             result["checkpoint_hash"])
        states = backbone_states(backbone, events, cache=cache, batch_size=batch_size)
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
