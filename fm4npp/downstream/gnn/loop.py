"""The training loop of the GNN baselines: AdamW, warmup + cosine, clipping, best-val weights.

The same optimiser, schedule, clipping and best-val-loss rule as the adapters
(fm4npp.downstream.fit) and the same FinetuneConfig fields (lr, weight_decay, grad_clip,
epochs, max_steps, batch_size, seed), so a GNN row of Table 2 differs from an adapter row in
the model, not in how it was trained. Items are per-event torch_geometric ``Data`` graphs,
batched into one disconnected graph per step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from fm4npp.downstream.config import FinetuneConfig
from fm4npp.downstream.fit import run_epochs

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
    val = (lambda: mean_loss(model, loss_fn, val_items, cfg.batch_size)) if val_items else None
    return run_epochs(model, opt, params, cfg, len(items),
                      lambda idx: loss_fn(model, collate(items[i] for i in idx), rng), val, rng, log, what)
