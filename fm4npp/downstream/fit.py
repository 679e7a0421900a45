"""The adapter training loop (AdamW, warmup + cosine, best-val-loss weights) and the mean loss."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from fm4npp.downstream.batching import _batches, _by_length, make_batch
from fm4npp.downstream.config import FinetuneConfig
from fm4npp.downstream.model import DownstreamModel
from fm4npp.model.schedule import warmup_cosine


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

    def step_loss(idx):
        b = make_batch([train_events[i] for i in idx],
                       [train_states[i] for i in idx] if train_states is not None else None,
                       crop=cfg.crop_points, rng=rng)
        return model.loss(b, model(b))["loss"]

    val = (lambda: mean_loss(model, val_events, val_states, cfg.batch_size)) if val_events else None
    return run_epochs(model, opt, [p for g in groups for p in g["params"]], cfg, len(train_events),
                      step_loss, val, rng, log)


def run_epochs(model: torch.nn.Module, opt, params, cfg: FinetuneConfig, n_items: int,
               step_loss, val_loss=None, rng=None, log=print, what: str = "") -> dict:
    """The epochs every downstream model trains by (adapters and the GNN baselines, so their
    rows differ in the model, not in the training): linear warmup over 5 % of the steps then
    cosine decay, gradient clipping, the weights of the best validation-loss epoch kept.
    ``step_loss(idx)`` is the loss of training items ``idx``; ``val_loss()`` a float."""
    total = math.ceil(n_items / cfg.batch_size) * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, max(1, total // 20), total, decay_during_warmup=True))
    history, best, best_state, step, t0 = [], float("inf"), None, 0, time.time()
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for idx in _batches(n_items, cfg.batch_size, rng):
            if step >= total:
                break
            loss = step_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        rec = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else float("nan")}
        if val_loss is not None:
            rec["val_loss"] = val_loss()
            if rec["val_loss"] < best:
                best, best_state = rec["val_loss"], copy.deepcopy(model.state_dict())
        rec["elapsed_s"] = time.time() - t0
        history.append(rec)
        log(f"{what + ' ' if what else ''}epoch {epoch}: step {step}/{total} train {rec['train_loss']:.4f}"
            + (f" val {rec['val_loss']:.4f}" if "val_loss" in rec else "") + f" ({rec['elapsed_s']:.0f} s)")
        if step >= total:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "steps": step, "best_val_loss": best if val_loss is not None else None}
