"""An Exa.TrkX-style track finder (appendix C): embedding -> radius graph -> interaction network -> components.

1. Metric learning: an MLP maps each hit's features (graph.hit_features) to a d_embed space,
   trained with Exa.TrkX's hinge loss on squared distances, pairs of hits of one truth track
   (any two, not only neighbours, as the paper's adaptation) pulled together, others pushed
   beyond radius^2. Pairs: one same-track partner per signal hit, ``random_pairs`` random
   partners, and the hit's neighbours in the current embedding (hard negatives).
2. The radius graph in the embedding space (graph.neighbour_edges: at most max_neighbours).
3. An interaction network (Battaglia et al. 2016, as in Exa.TrkX) classifies its edges: node
   and edge encoders, n_iterations of edge update [h_src, h_dst, e] and node update
   [h, sum of incoming and outgoing edges], residual; an MLP gives each edge's logit.
4. Edges above edge_threshold -> connected components (scipy.sparse.csgraph) -> track labels;
   components with fewer than min_track_hits hits are no track (-1).
Noise hits are in no truth track: every pair or edge touching one is false.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn

from fm4npp.downstream.config import ExaTrkXConfig
from fm4npp.downstream.gnn.graph import N_FEATURES, hit_features, neighbour_edges


def event_graph(event: dict):
    """Data with x (N,5) node features and track (N,) truth track id, -1 for noise."""
    from torch_geometric.data import Data

    noise = np.asarray(event["noise"], bool)
    track = np.where(noise, -1, np.asarray(event["track_id"], np.int64))
    return Data(x=torch.from_numpy(hit_features(event)), track=torch.from_numpy(track))


def _mlp(channels: list[int]):
    import torch_geometric.nn as pyg

    return pyg.MLP(channels, norm=None)


class ExaTrkX(nn.Module):
    def __init__(self, cfg: ExaTrkXConfig):
        super().__init__()
        self.cfg = cfg
        self.embedder = _mlp([N_FEATURES] + [cfg.embed_hidden] * cfg.embed_layers + [cfg.d_embed])
        g = cfg.gnn_hidden
        self.node_encoder = _mlp([N_FEATURES, g, g])
        self.edge_encoder = _mlp([2 * g, g, g])
        self.edge_nets = nn.ModuleList(_mlp([3 * g, g, g]) for _ in range(cfg.n_iterations))
        self.node_nets = nn.ModuleList(_mlp([2 * g, g, g]) for _ in range(cfg.n_iterations))
        self.edge_head = _mlp([3 * g, g, 1])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedder(x)

    def edge_logits(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """x (N,5), edge_index (2,E) -> (E,) logit that the edge joins two hits of one track."""
        from torch_geometric.utils import scatter

        src, dst = edge_index
        h = self.node_encoder(x)
        e = self.edge_encoder(torch.cat([h[src], h[dst]], -1))
        for edge_net, node_net in zip(self.edge_nets, self.node_nets):
            e = e + edge_net(torch.cat([h[src], h[dst], e], -1))
            agg = scatter(e, dst, 0, dim_size=h.shape[0]) + scatter(e, src, 0, dim_size=h.shape[0])
            h = h + node_net(torch.cat([h, agg], -1))
        return self.edge_head(torch.cat([h[src], h[dst], e], -1)).squeeze(-1)


def training_pairs(emb: np.ndarray, track: np.ndarray, cfg: ExaTrkXConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """(2, P) hit pairs of one event for the hinge loss (see the module docstring)."""
    n = emb.shape[0]
    parts = [neighbour_edges(emb, cfg.max_neighbours, cfg.radius)]
    if cfg.random_pairs:
        a = np.repeat(np.arange(n), cfg.random_pairs)
        parts.append(np.stack([a, rng.integers(0, n, a.size)]))
    sig = np.flatnonzero(track >= 0)
    if sig.size:  # one random same-track partner per signal hit
        order = sig[np.argsort(track[sig], kind="stable")]
        _, start, count = np.unique(track[order], return_index=True, return_counts=True)
        group = np.repeat(np.arange(start.size), count)
        partner = order[start[group] + (rng.random(order.size) * count[group]).astype(np.int64)]
        parts.append(np.stack([order, partner]))
    pairs = np.concatenate(parts, 1)
    return pairs[:, pairs[0] != pairs[1]]


def embedding_loss(model: ExaTrkX, batch, rng: np.random.Generator) -> torch.Tensor:
    """Hinge loss on squared embedding distances, positives and negatives averaged apart
    (the pairs are mostly negative; an even split keeps both sides pulling)."""
    emb = model.embed(batch.x)
    track = batch.track.numpy()
    detached = emb.detach().numpy()
    ptr = batch.ptr.numpy()
    pairs = np.concatenate([training_pairs(detached[a:b], track[a:b], model.cfg, rng) + a
                            for a, b in zip(ptr[:-1], ptr[1:])], 1)
    i, j = torch.from_numpy(pairs)
    d2 = (emb[i] - emb[j]).pow(2).sum(-1)
    true = torch.from_numpy((track[pairs[0]] == track[pairs[1]]) & (track[pairs[0]] >= 0))
    margin = model.cfg.radius ** 2
    pos = d2[true].mean() if true.any() else d2.new_zeros(())
    neg = F.relu(margin - d2[~true]).mean() if (~true).any() else d2.new_zeros(())
    return pos + neg


@torch.no_grad()
def radius_graph(model: ExaTrkX, graph):
    """The event's graph with edge_index = the radius graph of its embedding and edge_label =
    whether each edge joins two hits of one truth track."""
    model.eval()
    emb = model.embed(graph.x).numpy()
    edges = neighbour_edges(emb, model.cfg.max_neighbours, model.cfg.radius)
    track = graph.track.numpy()
    label = (track[edges[0]] == track[edges[1]]) & (track[edges[0]] >= 0)
    out = graph.clone()
    out.edge_index = torch.from_numpy(edges)
    out.edge_label = torch.from_numpy(label.astype(np.float32))
    return out


def edge_loss(model: ExaTrkX, batch, rng=None) -> torch.Tensor:
    if batch.edge_index.shape[1] == 0:
        return model.edge_head(torch.zeros(1, 3 * model.cfg.gnn_hidden)).sum() * 0.0
    logits = model.edge_logits(batch.x, batch.edge_index)
    return F.binary_cross_entropy_with_logits(logits, batch.edge_label)


def components(n: int, edges: np.ndarray, min_hits: int) -> np.ndarray:
    """(n,) track label per hit: connected components of the (undirected) kept edges; those
    smaller than ``min_hits`` get -1."""
    adj = coo_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(n, n))
    _, labels = connected_components(adj, directed=False)
    sizes = np.bincount(labels)
    big = sizes >= min_hits
    new = np.full(sizes.size, -1, np.int64)
    new[big] = np.arange(int(big.sum()))
    return new[labels]


@torch.no_grad()
def find_tracks(model: ExaTrkX, graphs) -> list[np.ndarray]:
    """Per event, a track label per hit (the event's serialized order)."""
    model.eval()
    out = []
    for g in graphs:
        rg = radius_graph(model, g)
        edges = rg.edge_index.numpy()
        if edges.shape[1]:
            keep = torch.sigmoid(model.edge_logits(rg.x, rg.edge_index)).numpy() > model.cfg.edge_threshold
            edges = edges[:, keep]
        out.append(components(g.num_nodes, edges, model.cfg.min_track_hits))
    return out
