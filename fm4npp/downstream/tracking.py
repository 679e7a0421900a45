"""Track finding as per-point instance segmentation (paper appendix "Downstream Model").

Point features x_i -> e_i = W x_i; K learnable track queries refined by L decoder layers
(masked cross-attention to the points, self-attention among queries, FFN); MLP heads give a
track embedding m_k and a track/no-object logit; p_ik = sigmoid(e_i . m_k). Training matches
queries to truth tracks with the Hungarian algorithm on focal + dice + class costs, with the
loss repeated at every decoder layer and at the initial queries. Inference puts point i in
track argmax_k p_ik * y_k.

Shapes: B events, L points (padded), K queries, d = d_embed, M truth tracks of one event.
Noise and padding: padded points are masked out of attention, losses and predictions (label
-1). Noise points never belong to a target track; with ``noise_in_masks="ignore"`` they are
also left out of the mask losses (see TrackingAdapterConfig).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from fm4npp.downstream.config import TrackingAdapterConfig


def _mlp(d_in: int, d_hidden: int, d_out: int, n_layers: int = 3) -> nn.Sequential:
    dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
    layers = []
    for i in range(n_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < n_layers - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DecoderLayer(nn.Module):
    """Mask2Former order: masked cross-attention -> self-attention -> FFN (post-norm)."""

    def __init__(self, d: int, n_heads: int, d_ffn: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.cross = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, d_ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ffn, d))
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, q, e, attn_bias):
        # q (B,K,d); e (B,L,d); attn_bias (B,K,L) added to the attention logits
        bias = attn_bias.repeat_interleave(self.n_heads, dim=0)  # (B*H, K, L)
        q = self.n1(q + self.cross(q, e, e, attn_mask=bias, need_weights=False)[0])
        q = self.n2(q + self.self_attn(q, q, q, need_weights=False)[0])
        return self.n3(q + self.ffn(q))


class TrackingAdapter(nn.Module):
    def __init__(self, d_in: int, cfg: TrackingAdapterConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TrackingAdapterConfig()
        d = cfg.d_embed
        self.proj = nn.Linear(d_in, d)  # the single linear map of Figure 8
        self.queries = nn.Parameter(torch.randn(cfg.n_queries, d))
        self.layers = nn.ModuleList(DecoderLayer(d, cfg.n_heads, cfg.d_ffn, cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        self.mask_mlp = _mlp(d, d, d)
        self.cls_head = nn.Linear(d, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Spacepoint embeddings e_i (B,L,d): what Figure 8 projects after the linear map."""
        return self.proj(x)

    def _heads(self, q, e):
        qn = self.norm(q)
        m = self.mask_mlp(qn)  # (B,K,d) track embeddings
        logits = torch.einsum("bld,bkd->blk", e, m)  # z_ik (B,L,K)
        return logits, self.cls_head(qn).squeeze(-1)  # (B,L,K), (B,K)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> list[dict]:
        """x (B,L,d_in) point features, mask (B,L) True = real point.

        Returns one dict per stage (initial queries, then each decoder layer) with
        ``mask_logits`` (B,L,K) and ``cls_logits`` (B,K); the last entry is the prediction.
        """
        e = self.embed(x)
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        logits, cls = self._heads(q, e)
        outs = [{"mask_logits": logits, "cls_logits": cls}]
        pad = ~mask[:, None, :]  # (B,1,L)
        for layer in self.layers:
            # The paper's mask A = -log(p + eps) "suppresses contributions from low-probability
            # points": that is logits - A, i.e. attention weights scaled by (p + eps).
            bias = torch.log(torch.sigmoid(logits.detach()) + self.cfg.mask_eps).transpose(1, 2)
            bias = bias.masked_fill(pad, float("-inf"))
            # An event with no real point would give all -inf rows (NaN): unmask those rows.
            bias = bias.masked_fill(pad.all(-1, keepdim=True), 0.0)
            q = layer(q, e, bias)
            logits, cls = self._heads(q, e)
            outs.append({"mask_logits": logits, "cls_logits": cls})
        return outs


# ---------------------------------------------------------------------------------------------
# targets, matching and losses


def build_targets(track_id, noise, mask, cfg: TrackingAdapterConfig) -> list[dict]:
    """Per event: ``masks`` (M,L) bool truth tracks over all L (padded) positions, ``points``
    (L,) bool positions that enter the mask losses, ``ids`` (M,) track ids.

    Padding and noise are never in a target; tracks with fewer than ``min_track_hits``
    spacepoints are not targets and their points are ignored; if an event has more tracks than
    queries, the ``n_queries`` largest are kept and the rest are ignored.
    """
    out = []
    for b in range(track_id.shape[0]):
        tid = track_id[b]
        nz = noise[b] > 0
        signal = mask[b] & ~nz & (tid >= 0)
        ids, counts = torch.unique(tid[signal], return_counts=True)
        keep = counts >= cfg.min_track_hits
        ids, counts = ids[keep], counts[keep]
        if ids.numel() > cfg.n_queries:
            ids = ids[torch.argsort(counts, descending=True)[: cfg.n_queries]]
        masks = (tid[None, :] == ids[:, None]) & signal[None, :]
        points = masks.any(0)
        if cfg.noise_in_masks == "negative":
            points = points | (mask[b] & nz)
        out.append({"masks": masks, "points": points, "ids": ids})
    return out


def sigmoid_focal(x, t, alpha: float, gamma: float):
    """Element-wise sigmoid focal loss (RetinaNet)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return a_t * (1 - p_t) ** gamma * ce


@torch.no_grad()
def match_cost(logits, cls_logits, tgt, cfg: TrackingAdapterConfig) -> torch.Tensor:
    """Cost (K,M) between the K queries and M truth tracks of one event.

    logits (n,K) at the n loss points, cls_logits (K,), tgt (M,n) float.
    """
    n = logits.shape[0]
    p = torch.sigmoid(logits)
    pos = sigmoid_focal(logits, torch.ones_like(logits), cfg.focal_alpha, cfg.focal_gamma)
    neg = sigmoid_focal(logits, torch.zeros_like(logits), cfg.focal_alpha, cfg.focal_gamma)
    focal = (pos.T @ tgt.T + neg.T @ (1 - tgt).T) / max(n, 1)
    dice = 1 - (2 * p.T @ tgt.T + 1) / (p.sum(0)[:, None] + tgt.sum(1)[None, :] + 1)
    cls = -torch.sigmoid(cls_logits)[:, None]
    return cfg.lambda_focal * focal + cfg.lambda_dice * dice + cfg.lambda_cls * cls


def hungarian(cost: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Query indices and track indices of the minimum-cost matching."""
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return rows, cols


def stage_loss(logits, cls_logits, targets: list[dict], cfg: TrackingAdapterConfig) -> dict:
    """Loss of one decoder stage over a batch (mask terms averaged over matched tracks)."""
    focal_sum = logits.new_zeros(())
    dice_sum = logits.new_zeros(())
    cls_terms = []
    n_tracks = 0
    for b, tg in enumerate(targets):
        K = cls_logits.shape[1]
        cls_target = torch.zeros(K, device=logits.device)
        pts = tg["points"]
        M = tg["masks"].shape[0]
        if M and pts.any():
            x = logits[b][pts]  # (n,K)
            t = tg["masks"][:, pts].float()  # (M,n)
            rows, cols = hungarian(match_cost(x, cls_logits[b], t, cfg))
            rows_t, cols_t = torch.as_tensor(rows), torch.as_tensor(cols)
            xm, tm = x[:, rows_t], t[cols_t].T  # (n,M)
            focal_sum = focal_sum + sigmoid_focal(xm, tm, cfg.focal_alpha, cfg.focal_gamma).mean(0).sum()
            pm = torch.sigmoid(xm)
            dice = 1 - (2 * (pm * tm).sum(0) + 1) / (pm.sum(0) + tm.sum(0) + 1)
            dice_sum = dice_sum + dice.sum()
            cls_target[rows_t] = 1.0
            n_tracks += len(rows)
        w = torch.where(cls_target > 0, 1.0, cfg.no_object_weight)
        cls_terms.append(F.binary_cross_entropy_with_logits(cls_logits[b], cls_target, weight=w, reduction="sum") / w.sum())
    n = max(n_tracks, 1)
    focal, dice, cls = focal_sum / n, dice_sum / n, torch.stack(cls_terms).mean()
    total = cfg.lambda_focal * focal + cfg.lambda_dice * dice + cfg.lambda_cls * cls
    return {"loss": total, "focal": focal.detach(), "dice": dice.detach(), "cls": cls.detach()}


def tracking_loss(outs: list[dict], track_id, noise, mask, cfg: TrackingAdapterConfig) -> dict:
    """Sum of the stage losses (auxiliary losses at every decoder layer and the initial queries)."""
    targets = build_targets(track_id, noise, mask, cfg)
    stages = [stage_loss(o["mask_logits"], o["cls_logits"], targets, cfg) for o in outs]
    last = stages[-1]
    return {
        "loss": sum(s["loss"] for s in stages),
        "final_loss": last["loss"].detach(),
        "focal": last["focal"],
        "dice": last["dice"],
        "cls": last["cls"],
    }


@torch.no_grad()
def assign_tracks(out: dict, mask: torch.Tensor) -> torch.Tensor:
    """(B,L) predicted track label per point: argmax_k p_ik * y_k; padding -> -1."""
    score = torch.sigmoid(out["mask_logits"]) * torch.sigmoid(out["cls_logits"])[:, None, :]
    labels = score.argmax(-1)
    return labels.masked_fill(~mask, -1)
