"""The training loop of the GNN baselines: AdamW, warmup + cosine, clipping, best-val weights.

The same optimiser, schedule, clipping and best-val-loss rule as the adapters
(fm4npp.downstream.fit) and the same FinetuneConfig fields (lr, weight_decay, grad_clip,
epochs, max_steps, batch_size, seed), so a GNN row of Table 2 differs from an adapter row in
the model, not in how it was trained. Items are per-event torch_geometric ``Data`` graphs,
batched into one disconnected graph per step.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from fm4npp.downstream.batching import _batches
from fm4npp.downstream.config import FinetuneConfig
from fm4npp.model.schedule import warmup_cosine

VAL_SEED = 12345  # fixed pair sampling on validation graphs: epochs compare like with like


def collate(items):
    from torch_geometric.data import Batch

    return Batch.from_data_list(list(items))


@torch.no_grad()
def mean_loss(model, loss_fn: Callable, items: Sequence, batch_size: int) -> float:
    model.eval()
    rng = np.random.default_rng(VAL_SEED)
    tot, n = 0.0, 0
    for start in range(0, len(items), batch_size):
        part = items[start : start + batch_size]
        tot += float(loss_fn(model, collate(part), rng)) * len(part)
        n += len(part)
    return tot / max(n, 1)


def fit_graphs(model: torch.nn.Module, loss_fn: Callable, items: Sequence, cfg: FinetuneConfig,
               val_items: Sequence = (), log=print, what: str = "gnn") -> dict:
    """Train ``model`` on ``loss_fn(model, batch, rng) -> scalar loss``; keep the best-val weights."""
    if not items:
        raise ValueError(f"{what}: no training graphs")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = math.ceil(len(items) / cfg.batch_size) * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, max(1, total // 20), total, decay_during_warmup=True))
    history, best, best_state, step, t0 = [], float("inf"), None, 0, time.time()
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for idx in _batches(len(items), cfg.batch_size, rng):
            if step >= total:
                break
            loss = loss_fn(model, collate(items[i] for i in idx), rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        rec = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else float("nan")}
        if val_items:
            rec["val_loss"] = mean_loss(model, loss_fn, val_items, cfg.batch_size)
            if rec["val_loss"] < best:
                best, best_state = rec["val_loss"], copy.deepcopy(model.state_dict())
        rec["elapsed_s"] = time.time() - t0
        history.append(rec)
        log(f"{what} epoch {epoch}: step {step}/{total} train {rec['train_loss']:.4f}"
            + (f" val {rec['val_loss']:.4f}" if "val_loss" in rec else "") + f" ({rec['elapsed_s']:.0f} s)")
        if step >= total:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "steps": step, "best_val_loss": best if val_items else None}
