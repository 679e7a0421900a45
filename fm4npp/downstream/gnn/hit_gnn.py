"""Hit-classification GNNs for PID and noise tagging (appendix C): GATConv, GCNConv, GraphConv, SAGEConv.

Per event: a graph over its hits (graph.neighbour_edges on the 4D location, graph.hit_features
as node features) -> node-encoder MLP (2 hidden layers) -> n_layers torch_geometric
convolutions with ReLU -> classifier MLP -> per-hit class logits, trained with (class-weighted)
cross entropy. The convolution is the only thing that differs between the four models.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fm4npp.downstream.batching import task_labels
from fm4npp.downstream.config import HitGNNConfig
from fm4npp.downstream.gnn.graph import N_FEATURES, hit_features, hit_location, neighbour_edges

CONVS = {"sage": "SAGEConv", "gat": "GATConv", "gcn": "GCNConv", "graphconv": "GraphConv"}


def event_graph(event: dict, task: str, cfg: HitGNNConfig):
    """One event as a torch_geometric Data: x (N,5), edge_index (2,E), y (N,) task labels."""
    from torch_geometric.data import Data

    edges = neighbour_edges(hit_location(event["coords"]), cfg.k, cfg.radius)
    return Data(x=torch.from_numpy(hit_features(event)), edge_index=torch.from_numpy(edges),
                y=torch.from_numpy(task_labels(task, event)))


class HitGNN(nn.Module):
    def __init__(self, kind: str, n_classes: int, cfg: HitGNNConfig, weights: torch.Tensor | None = None):
        super().__init__()
        import torch_geometric.nn as pyg

        if kind not in CONVS:
            raise ValueError(f"hit GNN must be one of {sorted(CONVS)}, got {kind!r}")
        h = cfg.d_hidden
        self.encoder = pyg.MLP([N_FEATURES, h, h, h], norm=None, dropout=cfg.dropout)
        conv = getattr(pyg, CONVS[kind])
        # GAT's heads are averaged (concat=False) so every model keeps width h
        kw = {"heads": cfg.gat_heads, "concat": False} if kind == "gat" else {}
        self.convs = nn.ModuleList(conv(h, h, **kw) for _ in range(cfg.n_layers))
        widths = [int(w) for w in cfg.classifier_widths.split(",")]
        self.classifier = pyg.MLP([h, *widths, n_classes], norm=None, dropout=cfg.dropout)
        self.register_buffer("class_weights", weights if weights is not None else torch.ones(0))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """x (N,5), edge_index (2,E) -> logits (N,C)."""
        h = self.encoder(x)
        for conv in self.convs:
            h = F.relu(conv(h, edge_index))
        return self.classifier(h)


def hit_loss(model: HitGNN, batch, rng=None) -> torch.Tensor:
    w = model.class_weights if model.class_weights.numel() else None
    return F.cross_entropy(model(batch.x, batch.edge_index), batch.y, weight=w, ignore_index=-1)


@torch.no_grad()
def predict_hits(model: HitGNN, graphs) -> list[np.ndarray]:
    """Per event, the predicted class of each hit (the event's serialized order)."""
    model.eval()
    return [model(g.x, g.edge_index).argmax(-1).numpy() for g in graphs]
