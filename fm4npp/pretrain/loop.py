"""The Ray Train per-worker pretraining loop.

Two ways to feed it (``PretrainConfig.data_mode``):

- "memory" (default; exact): every worker holds the serialized training events, sorted by
  event id, and step ``s`` uses positions ``s*B .. (s+1)*B-1`` of an endless sequence of
  seeded per-epoch permutations; rank r takes its slice of that global batch. The events a
  step sees depend neither on the number of workers nor on restarts, the data position is
  the step, and a resumed run repeats an uninterrupted one exactly.
- "stream" (data larger than memory): each worker streams its own split of the training
  set through the Ray Data pipeline, epoch after epoch (seeded shuffle per epoch); the data
  position is (epoch, batches consumed in it) and a resumed worker skips what it consumed.
  Exact only as far as Ray Data reproduces the same split and order.

Counters (events, spacepoints D, FLOPs C) are summed over ranks at every report and carried
in checkpoints. What a step optimises and validation measures is the run's objective
(fm4npp.pretrain.objectives, chosen by name), recorded in every checkpoint.
"""

from __future__ import annotations

import os
import random
import tempfile
import time

import numpy as np

from fm4npp.files import read_safetensors
from fm4npp.overrides import load_function
from fm4npp.model.schedule import warmup_cosine
from fm4npp.pretrain.checkpoint import (MODEL_FILE, PRETRAINED_DIR, load_train_state,
                                        save_train_state)
from fm4npp.pretrain.config import PretrainConfig
from fm4npp.pretrain.model_spec import model_config_for
from fm4npp.pretrain.objectives import build_objective
from fm4npp.pretrain.sources import make_source, materialize
from fm4npp.pretrain.validation import allreduce_sum, evaluate


# -- helpers --------------------------------------------------------------------------------
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


def extra_serialize(serialize: dict, mixture: list | None = None, sources: list | None = None) -> dict:
    """The checkpoint record of the run's serialization: the whole SerializeConfig, plus the
    two choices the run itself makes (order, point cap) at the top level, where the
    downstream reads them; for a data mixture also ``mixture`` (fm4npp.data.mixture.record:
    each component's name, path, weight, bins hash, detector); ``bins_sources``: the data sets
    its bins were fitted on (fm4npp.pretrain.inputs.bins_sources)."""
    return {"serialize": dict(serialize), "order": serialize["order"],
            "max_points": serialize["max_points"], **({"mixture": mixture} if mixture else {}),
            **({"bins_sources": list(sources)} if sources is not None else {})}


def _save_checkpoint(raw_model, opt, sched, step, cfg_dict, bins_hash, extra, serialize: dict,
                     objective: dict, final: bool = False, mixture: list | None = None,
                     sources: list | None = None) -> str:
    """A checkpoint directory (fm4npp.pretrain.checkpoint): model weights, the training state
    (optimizer, scheduler, RNG, step, data position, counters, config, bins hash, serialization,
    objective record) and, for the final one, ``pretrained/`` in fm4npp.model.io format (what
    the downstream adapters load), with the same records."""
    from safetensors.torch import save_file

    d = tempfile.mkdtemp(prefix="fm4npp-ckpt-")
    state = {k: v.detach().cpu().contiguous() for k, v in raw_model.state_dict().items()}
    save_file(state, os.path.join(d, MODEL_FILE))
    if final:
        from fm4npp.model.io import save_pretrained

        save_pretrained(raw_model, os.path.join(d, PRETRAINED_DIR),
                        extra={"bins_hash": bins_hash, "bins": cfg_dict["bins"], "step": step,
                               "pretrain_run": cfg_dict["run_name"], "pretrain_config": cfg_dict,
                               **extra_serialize(serialize, mixture, sources),
                               "objective": objective})
    save_train_state(d, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "step": step, "rng": _rng_state(), "config": cfg_dict,
                         "bins_hash": bins_hash, **extra_serialize(serialize, mixture, sources),
                         "objective": objective, **extra})
    return d


# -- the loop -------------------------------------------------------------------------------
def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker function. ``config``: {"pretrain": resolved PretrainConfig dict,
    "bins_hash": str, "serialize": dict, "mixture": record or None}. Reports metrics every
    ``log_every`` steps, validates every ``val_every``, checkpoints every ``ckpt_every`` (all
    three also at the last step)."""
    import contextlib
    import functools
    import shutil

    import ray.train
    import ray.train.torch
    import torch

    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.flops import flops_per_token

    cfg = PretrainConfig(**config["pretrain"])
    objective = build_objective(cfg)
    bins_hash = config["bins_hash"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")

    def autocast():
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    source = make_source(cfg, rank, world, config.get("mixture"))
    val_events = materialize(ray.train.get_dataset_shard("val"), cfg.val_events)
    if not val_events:
        raise ValueError(f"no validation events in {cfg.data}")
    from fm4npp.data.pipeline import collate

    objective.check_batch(collate(val_events[:1]))  # fields the data lack: fail now, clearly

    mcfg = model_config_for(cfg, val_events[0]["targets"].shape[1])  # the data's k
    raw_model = FM4NPP(mcfg)
    n_params = int(raw_model.num_params())

    @functools.lru_cache(maxsize=None)
    def event_flops(n: int) -> float:  # forward + backward FLOPs of an event's real points
        return float(flops_per_token(mcfg, n)) * n

    opt = torch.optim.AdamW(_param_groups(raw_model, cfg.lr, cfg.weight_decay), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, cfg.warmup, cfg.steps, cfg.min_lr_ratio))

    start, last_metrics, resumed = 0, None, False
    counters = {"events": 0, "spacepoints_D": 0, "flops_C": 0.0}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_train_state(d)
            if state["bins_hash"] != bins_hash:
                raise ValueError(
                    f"checkpoint {ckpt.path} was trained with serialization bins "
                    f"{state['bins_hash']} but {cfg.bins} has hash {bins_hash}; refusing to resume")
            recorded = state.get("objective")  # None: from before objectives were recorded
            if recorded is not None and recorded != objective.record():
                raise ValueError(f"checkpoint {ckpt.path} was trained with objective {recorded} "
                                 f"but this run's is {objective.record()}; refusing to resume")
            raw_model.load_state_dict(read_safetensors(os.path.join(d, MODEL_FILE)), strict=True)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
            source.restore(state["data_position"])
            counters = dict(state["counters"])
            start, last_metrics, resumed = int(state["step"]), state.get("metrics"), True
    elif cfg.init_from:
        state = load_train_state(cfg.init_from)
        if state["bins_hash"] != bins_hash:
            raise ValueError(f"init_from {cfg.init_from} was trained with serialization bins "
                             f"{state['bins_hash']} but {cfg.bins} has hash {bins_hash}")
        _load_init_weights(raw_model, cfg.init_from, state.get("objective"), objective.record())
        counters = dict(state["counters"])
    raw_model.to(device)
    # an objective that leaves the kNN head out leaves its weights without gradients: DDP
    # must be told, or it waits for them forever
    ddp = {} if objective.uses_knn_head else {
        "parallel_strategy_kwargs": {"find_unused_parameters": True}}
    model = (ray.train.torch.prepare_model(raw_model, move_to_device=device, **ddp) if world > 1
             else raw_model)
    model.train()

    if start >= cfg.steps:  # finished before: report its last metrics again, train nothing
        ray.train.report(dict(last_metrics or {"step": start}), checkpoint=None)
        return

    val_bs = max(cfg.batch_size // world, 1)
    baseline = evaluate(None, objective, val_events, val_bs, rank, world, device, autocast,
                        baseline=True)
    parts = [f"train_{name}" for name in objective.metric_names]  # the loss's named parts
    window = {"loss": 0.0, "steps": 0, "events": 0, "points": 0, "flops": 0.0,
              **dict.fromkeys(parts, 0.0)}
    t_window = time.perf_counter()
    hook = load_function(cfg.step_hook, "step_hook") if cfg.step_hook else None

    for step in range(start, cfg.steps):
        if hook is not None:
            hook(step=step, rank=rank, cfg=cfg)

        b = {k: v.to(device) for k, v in source.batch(step).items()}
        with autocast():
            outputs = objective.forward(model, b, step)
        loss, loss_parts = objective.loss(outputs, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        sched.step()

        lengths = b["mask"].sum(1).tolist()
        window["loss"] += float(loss.detach())
        for name, value in loss_parts.items():
            window[f"train_{name}"] += float(value)
        window["steps"] += 1
        window["events"] += len(lengths)
        window["points"] += sum(lengths)
        window["flops"] += sum(event_flops(int(n)) for n in lengths)

        done = step + 1
        last = done == cfg.steps
        do_val = done % cfg.val_every == 0 or last
        do_ckpt = done % cfg.ckpt_every == 0 or last
        if not (done % cfg.log_every == 0 or do_val or do_ckpt):
            continue

        keys = list(window)
        summed = dict(zip(keys, allreduce_sum([window[k] for k in keys], device)))
        counters["events"] += int(summed["events"])
        counters["spacepoints_D"] += int(summed["points"])
        counters["flops_C"] += summed["flops"]
        metrics = {
            "step": done,
            "train_loss": summed["loss"] / max(summed["steps"], 1),  # mean of rank means
            "lr": cfg.lr * warmup_cosine(step, cfg.warmup, cfg.steps, cfg.min_lr_ratio),
            "grad_norm": grad_norm,  # before clipping, after DDP's all-reduce
            **counters,
            "params_N": n_params,
            "torch_threads": torch.get_num_threads(),  # Ray sets OMP_NUM_THREADS from the worker's CPUs
            "tokens_per_s": summed["points"] / max(time.perf_counter() - t_window, 1e-9),
            **{p: summed[p] / max(summed["steps"], 1) for p in parts},
        }
        if do_val:  # the constant baseline rides along with each val point, not every log line
            metrics.update(evaluate(model, objective, val_events, val_bs, rank, world, device,
                                    autocast))
            metrics.update(baseline)
        if resumed:
            metrics["resumed_at_step"] = start
            resumed = False
        checkpoint = tmp = None
        if do_ckpt and rank == 0:
            tmp = _save_checkpoint(raw_model, opt, sched, done, config["pretrain"], bins_hash,
                                   {"metrics": metrics, "counters": dict(counters),
                                    "data_position": source.position()},
                                   config["serialize"], objective.record(), final=last,
                                   mixture=config.get("mixture"),
                                   sources=config.get("bins_sources"))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        window = dict.fromkeys(window, 0)
        t_window = time.perf_counter()


def _load_init_weights(model, path: str, recorded, wanted) -> None:
    """``init_from``'s weights into ``model``. Another objective's heads or mask token, or the
    other backbone direction, make a different architecture: refused by name, not by torch's
    list of state-dict keys."""
    weights = read_safetensors(os.path.join(path, MODEL_FILE))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = sorted(k for k in set(own) & set(weights) if tuple(own[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(
            f"init_from {path} (objective {recorded}) does not fit this run's model (objective "
            f"{wanted}): weights missing {missing[:4]}, unexpected {unexpected[:4]}, of another "
            f"shape {shapes[:4]}; continue with the objective and backbone it was trained with")
    model.load_state_dict(weights, strict=True)
