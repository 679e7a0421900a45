"""The Ray Train per-worker pretraining loop.

Data order is a pure function of (seed, step): every worker holds the serialized training
events (sorted by event id) and step ``s`` uses positions ``s*B .. (s+1)*B-1`` of an endless
sequence of seeded per-epoch permutations; rank r takes its slice of that global batch. So
the events a step sees do not depend on the number of workers or on restarts, a checkpoint's
data position is just its step, and resuming is exact.
"""

from __future__ import annotations

import math
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from fm4npp.pretrain.config import PretrainConfig

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"


# -- schedule & data order ------------------------------------------------------------------
def lr_lambda(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at ``step``: linear warmup, then cosine decay to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def global_batch_indices(step: int, batch: int, n_events: int, seed: int) -> np.ndarray:
    """Indices (into the event-id-sorted training events) of the global batch of ``step``."""
    pos = np.arange(step * batch, (step + 1) * batch)
    out = np.empty(batch, dtype=np.int64)
    for epoch in np.unique(pos // n_events):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n_events)
        sel = pos // n_events == epoch
        out[sel] = perm[pos[sel] % n_events]
    return out


# -- helpers --------------------------------------------------------------------------------
def consumed(steps: int, batch: int, seed: int, n_points: np.ndarray, event_flops: np.ndarray):
    """(events, spacepoints D, FLOPs C) consumed by the first ``steps`` steps; whole epochs
    use every event once, so only the last partial epoch is summed event by event."""
    n = len(n_points)
    total = steps * batch
    full, rest = divmod(total, n)
    idx = np.random.default_rng([seed, int(full)]).permutation(n)[:rest]
    return (total, int(full * n_points.sum() + n_points[idx].sum()),
            float(full * event_flops.sum() + event_flops[idx].sum()))


def _materialize(shard) -> list[dict]:
    """All serialized events of a Ray Data shard as event dicts, sorted by event id."""
    from fm4npp.data import pipeline

    events = [pipeline.row_to_event(row) for row in shard.iter_rows()]
    events.sort(key=lambda e: int(e["event_id"]))
    return events


def _allreduce_sum(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _param_groups(model, lr: float, weight_decay: float):
    """The model's (muP-aware) parameter groups; LambdaLR scales each group's own lr, so the
    per-group muP ratios survive the schedule."""
    try:
        from fm4npp.model.mup import param_groups
    except ImportError:  # model package without muP support: one plain group
        return [{"params": list(model.parameters()), "lr": lr, "weight_decay": weight_decay}]
    return param_groups(model, lr, weight_decay)


def _rng_state() -> dict:
    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def _set_rng_state(s: dict) -> None:
    import torch

    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def model_config_for(cfg: PretrainConfig, k: int):
    """The preset's ModelConfig with the data's k and the run's muP choice."""
    import dataclasses

    from fm4npp.model.presets import get_preset

    mcfg = get_preset(cfg.preset)
    changes = {"k": int(k)}
    if cfg.n_layers:
        changes["n_layers"] = cfg.n_layers
    if cfg.mup != "preset":
        changes["mup"] = cfg.mup == "on"
    return dataclasses.replace(mcfg, **changes)


def evaluate(model, events: list[dict], batch_size: int, rank: int, world: int, device,
             autocast, trivial: bool = False) -> float:
    """Validation MSE: the unweighted mean over events of each event's mean squared
    neighbour distance (loss.py), over all of ``events`` (ranks split them, then sum)."""
    import torch

    from fm4npp.data.pipeline import collate
    from fm4npp.pretrain.loss import per_event_mse, trivial_predictions

    mine = events[rank::world]
    total, count = 0.0, 0
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    with torch.no_grad():
        for i in range(0, len(mine), batch_size):
            b = {k: v.to(device) for k, v in collate(mine[i : i + batch_size]).items()}
            if trivial:
                preds = trivial_predictions(b["coords"], b["targets"].shape[2])
            else:
                with autocast():
                    preds = model(b["coords"], b["energy"], b["mask"])
            per_event, n = per_event_mse(preds, b["targets"], b["target_mask"])
            has = n > 0
            total += float(per_event[has].sum())
            count += int(has.sum())
    if model is not None and was_training:
        model.train()
    total, count = _allreduce_sum([total, count], device)
    return total / max(count, 1)


def _save_checkpoint(raw_model, opt, sched, step, cfg_dict, bins_hash, extra) -> str:
    import torch
    from safetensors.torch import save_file

    d = tempfile.mkdtemp(prefix="fm4npp-ckpt-")
    state = {k: v.detach().cpu().contiguous() for k, v in raw_model.state_dict().items()}
    save_file(state, os.path.join(d, MODEL_FILE))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                "data_position": step, "rng": _rng_state(), "config": cfg_dict,
                "bins_hash": bins_hash, **extra}, os.path.join(d, STATE_FILE))
    return d


def load_train_state(ckpt_dir: str) -> dict:
    import torch

    # our own file (optimizer/RNG state holds numpy objects): full unpickling is intended
    return torch.load(os.path.join(ckpt_dir, STATE_FILE), map_location="cpu", weights_only=False)


# -- the loop -------------------------------------------------------------------------------
def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker function. ``config``: {"pretrain": PretrainConfig dict (resolved),
    "bins_hash": str}. Reports metrics every ``log_every`` steps, validates every
    ``val_every``, checkpoints every ``ckpt_every`` (all also at the last step)."""
    import contextlib

    import ray.train
    import ray.train.torch
    import torch
    from safetensors.torch import load_file

    from fm4npp.data.pipeline import collate
    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.flops import flops_per_token
    from fm4npp.pretrain.loss import pretrain_loss

    cfg = PretrainConfig(**config["pretrain"])
    bins_hash = config["bins_hash"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    on_gpu = device.type == "cuda"

    def autocast():
        if on_gpu:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    train_events = _materialize(ray.train.get_dataset_shard("train"))
    val_events = _materialize(ray.train.get_dataset_shard("val"))
    if cfg.val_events:
        val_events = val_events[: cfg.val_events]
    if not train_events or not val_events:
        raise ValueError(f"empty split: {len(train_events)} train / {len(val_events)} val events "
                         f"in {cfg.data}")
    n_points = np.array([len(e["coords"]) for e in train_events], dtype=np.int64)
    k = int(train_events[0]["targets"].shape[1])

    mcfg = model_config_for(cfg, k)
    raw_model = FM4NPP(mcfg)
    n_params = int(raw_model.num_params())
    # FLOPs of the real (unpadded) points of each event: forward + backward
    event_flops = np.array([flops_per_token(mcfg, int(n)) * int(n) for n in n_points],
                           dtype=np.float64)

    opt = torch.optim.AdamW(_param_groups(raw_model, cfg.lr, cfg.weight_decay), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, cfg.warmup, cfg.steps, cfg.min_lr_ratio))

    start = 0
    resumed_from = final_metrics = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_train_state(d)
            if state["bins_hash"] != bins_hash:
                raise ValueError(
                    f"checkpoint {ckpt.path} was trained with serialization bins "
                    f"{state['bins_hash']} but {cfg.bins} has hash {bins_hash}; refusing to resume")
            raw_model.load_state_dict(load_file(os.path.join(d, MODEL_FILE)), strict=True)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
            start = int(state["step"])
            resumed_from = ckpt.path
            final_metrics = state.get("metrics")
    raw_model.to(device)
    model = ray.train.torch.prepare_model(raw_model, move_to_device=device) if world > 1 \
        else raw_model
    model.train()

    local_batch = cfg.batch_size // world
    val_bs = max(local_batch, 1)
    baseline = evaluate(None, val_events, val_bs, rank, world, device, autocast, trivial=True)

    events_seen, points_seen, flops_seen = consumed(start, cfg.batch_size, cfg.seed,
                                                    n_points, event_flops)
    loss_sum, loss_n, tokens_window, t_window = 0.0, 0, 0, time.perf_counter()
    grad_norm = float("nan")
    fault_marker = Path(cfg.storage_path) / cfg.run_name / ".fault_injected"

    if start >= cfg.steps:  # finished before: report its last metrics again, train nothing
        ray.train.report(dict(final_metrics or {"step": start}), checkpoint=None)
        return

    for step in range(start, cfg.steps):
        if cfg.fault_at_step and step == cfg.fault_at_step and rank == 0 \
                and not fault_marker.exists():
            # Ray Train registers reports asynchronously: wait until the last checkpoint is
            # committed, so the test knows which one the replacement must resume from
            ray.train.get_all_reported_checkpoints(
                consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=300)
            fault_marker.parent.mkdir(parents=True, exist_ok=True)
            fault_marker.write_text(str(step))
            os.kill(os.getpid(), signal.SIGKILL)  # a worker dying mid-run, for the test

        gidx = global_batch_indices(step, cfg.batch_size, len(train_events), cfg.seed)
        lidx = gidx[rank * local_batch : (rank + 1) * local_batch]
        b = {k_: v.to(device) for k_, v in collate([train_events[i] for i in lidx]).items()}
        with autocast():
            preds = model(b["coords"], b["energy"], b["mask"])
        loss = pretrain_loss(preds, b["targets"], b["target_mask"],
                             b["weight"] if cfg.difficulty_weighting else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        sched.step()

        events_seen += len(gidx)
        points_seen += int(n_points[gidx].sum())
        flops_seen += float(event_flops[gidx].sum())
        tokens_window += int(n_points[gidx].sum())
        loss_sum += float(loss.detach())
        loss_n += 1

        done = step + 1
        last = done == cfg.steps
        do_val = done % cfg.val_every == 0 or last
        do_ckpt = done % cfg.ckpt_every == 0 or last
        if not (done % cfg.log_every == 0 or do_val or do_ckpt):
            continue

        loss_sum_all, loss_n_all = _allreduce_sum([loss_sum, loss_n], device)
        elapsed = time.perf_counter() - t_window
        metrics = {
            "step": done,
            "train_loss": loss_sum_all / max(loss_n_all, 1),
            "lr": cfg.lr * lr_lambda(step, cfg.warmup, cfg.steps, cfg.min_lr_ratio),
            "grad_norm": grad_norm,
            "events": events_seen,
            "spacepoints_D": points_seen,
            "flops_C": flops_seen,
            "params_N": n_params,
            "tokens_per_s": tokens_window / max(elapsed, 1e-9),
            "val_baseline_mse": baseline,
        }
        if do_val:
            metrics["val_mse"] = evaluate(model, val_events, val_bs, rank, world, device, autocast)
        if resumed_from is not None:
            metrics["resumed_at_step"] = start
            resumed_from = None
        checkpoint = None
        tmp = None
        if do_ckpt and rank == 0:
            tmp = _save_checkpoint(raw_model, opt, sched, done, config["pretrain"], bins_hash,
                                   {"metrics": metrics})
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        loss_sum, loss_n, tokens_window, t_window = 0.0, 0, 0, time.perf_counter()
