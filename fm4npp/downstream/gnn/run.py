"""What `fm4npp finetune --model sage|gat|gcn|graphconv|exatrkx` runs: build, train, predict a GNN baseline.

fm4npp.downstream.train calls these in place of the adapter path; loading the data, the
splits, scoring, saving and MLflow logging stay shared, so a GNN row of Table 2 is scored on
the same test events with the same metrics as the FM.
"""

from __future__ import annotations

import numpy as np
import torch

from fm4npp.downstream.config import HIT_GNNS, TRACK_GNNS, FinetuneConfig
from fm4npp.downstream.gnn import exatrkx, hit_gnn
from fm4npp.downstream.gnn.loop import fit_graphs


def is_gnn(cfg: FinetuneConfig) -> bool:
    return cfg.source in HIT_GNNS + TRACK_GNNS


def build_gnn(cfg: FinetuneConfig, n_classes: int = 0, weights: torch.Tensor | None = None) -> torch.nn.Module:
    if cfg.source in TRACK_GNNS:
        return exatrkx.ExaTrkX(cfg.exatrkx)
    return hit_gnn.HitGNN(cfg.source, n_classes, cfg.gnn, weights)


def graphs(cfg: FinetuneConfig, events) -> list:
    if cfg.source in TRACK_GNNS:
        return [exatrkx.event_graph(e) for e in events]
    return [hit_gnn.event_graph(e, cfg.task, cfg.gnn) for e in events]


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # every weight of a baseline is trained


def _graph_quality(rgraphs) -> dict:
    """How good the radius graph is, before edge classification (pooled over events):
    edge purity = true edges / edges; edge efficiency = true edges / ordered same-track pairs."""
    true = sum(float(g.edge_label.sum()) for g in rgraphs)
    edges = sum(g.edge_index.shape[1] for g in rgraphs)
    pairs = 0
    for g in rgraphs:
        t = g.track.numpy()
        c = np.unique(t[t >= 0], return_counts=True)[1]
        pairs += int((c * (c - 1)).sum())
    return {"edges_per_hit": edges / max(sum(g.num_nodes for g in rgraphs), 1),
            "edge_purity": true / edges if edges else float("nan"),
            "edge_efficiency": true / pairs if pairs else float("nan")}


def train_gnn(cfg: FinetuneConfig, train_events, val_events, n_classes: int = 0,
              weights: torch.Tensor | None = None, log=print) -> tuple[torch.nn.Module, dict]:
    """The trained model and its training record (loss history per stage)."""
    torch.manual_seed(cfg.seed)
    model = build_gnn(cfg, n_classes, weights)
    tr, va = graphs(cfg, train_events), graphs(cfg, val_events)
    log(f"{cfg.source}: {len(tr)} training graphs, {n_trainable(model):,} parameters")
    if cfg.source in HIT_GNNS:
        return model, fit_graphs(model, hit_gnn.hit_loss, tr, cfg, va, log, cfg.source)
    emb = fit_graphs(model, exatrkx.embedding_loss, tr, cfg, va, log, "embedding")
    model.embedder.requires_grad_(False)  # stage 2 trains the interaction network only
    rtr = [exatrkx.radius_graph(model, g) for g in tr]
    rva = [exatrkx.radius_graph(model, g) for g in va]
    quality = _graph_quality(rtr)
    log("radius graph: " + ", ".join(f"{k} {v:.3f}" for k, v in quality.items()))
    edges = fit_graphs(model, exatrkx.edge_loss, rtr, cfg, rva, log, "edges")
    model.embedder.requires_grad_(True)
    return model, {"embedding": emb, "edges": edges, "radius_graph": quality,
                   "steps": emb["steps"] + edges["steps"], "best_val_loss": edges["best_val_loss"]}


def predict_gnn(model: torch.nn.Module, cfg: FinetuneConfig, events) -> list[np.ndarray]:
    """Per event, a label per point (serialized order): class (pid, noise) or track."""
    g = graphs(cfg, events)
    if cfg.source in TRACK_GNNS:
        return exatrkx.find_tracks(model, g)
    return hit_gnn.predict_hits(model, g)
