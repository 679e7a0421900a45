"""k-next-nearest-neighbour targets: for each point i, its k nearest points with r_j > r_i.

Distances are Euclidean in normalised (r, phi, eta) (columns 0, 1, 2), optionally with phi
periodic (period 1 in normalised units). Results are sorted by distance, ties by index, and
padded with -1 where fewer than k points lie strictly outside r_i.

`next_neighbor_indices` never builds the N x N matrix: it sorts by r, answers the few points
whose outward set is small by brute force over that (small) set, and the rest with a KD-tree
over all points, querying m > k candidates and discarding those with r_j <= r_i; a row is
accepted only once at least k valid candidates lie strictly inside the query radius (so the
set of everything closer is complete, ties included), otherwise m grows. Every accepted row is
re-ranked with the same float64 arithmetic as the brute-force reference, so the two agree
exactly (`dense_next_neighbor_indices` is that reference).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

_R, _PHI = 0, 1
# Relative safety margin between the KD-tree's own distance arithmetic and ours.
_BOUND_MARGIN = 1e-9


def pair_sq_dist(a: np.ndarray, b: np.ndarray, periodic_phi: bool) -> np.ndarray:
    """Squared distance between broadcastable (..., 3) float64 arrays — the one formula used by
    both the fast path and the reference, evaluated in a fixed order."""
    d = a - b
    dr, dphi, deta = d[..., 0], d[..., 1], d[..., 2]
    if periodic_phi:
        dphi = np.abs(dphi)
        dphi = np.minimum(dphi, 1.0 - dphi)
    return (dr * dr + dphi * dphi) + deta * deta


def _prepare(coords, periodic_phi: bool) -> np.ndarray:
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"coords must have shape (N, 3), got {c.shape}")
    c = c.astype(np.float64)
    if not np.isfinite(c).all():
        bad = int(np.flatnonzero(~np.isfinite(c).all(axis=1))[0])
        raise ValueError(f"coords row {bad} is not finite: {c[bad]}")
    if periodic_phi:
        c[:, _PHI] = np.mod(c[:, _PHI], 1.0)
        c[c[:, _PHI] >= 1.0, _PHI] = 0.0  # mod of a tiny negative can round up to 1.0
    return c


def _select(cand: np.ndarray, d2: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k candidates with smallest (d2, index); invalid entries carry d2 = inf and
    index -1. Returns (rows, k) int64 with -1 where fewer than k are valid."""
    key_idx = np.where(np.isfinite(d2), cand, np.iinfo(np.int64).max)
    order = np.lexsort((key_idx, d2), axis=-1)[:, :k]
    out = np.take_along_axis(cand, order, axis=1)
    out[~np.isfinite(np.take_along_axis(d2, order, axis=1))] = -1
    if out.shape[1] < k:
        out = np.concatenate([out, np.full((out.shape[0], k - out.shape[1]), -1, np.int64)], axis=1)
    return out


def dense_next_neighbor_indices(coords, k: int, periodic_phi: bool = False) -> np.ndarray:
    """Reference: the full N x N matrix (as in the public code), exact ties by index."""
    c = _prepare(coords, periodic_phi)
    n = c.shape[0]
    if n == 0 or k == 0:
        return np.full((n, k), -1, dtype=np.int64)
    d2 = pair_sq_dist(c[:, None, :], c[None, :, :], periodic_phi)
    d2[~(c[None, :, _R] > c[:, None, _R])] = np.inf
    cand = np.broadcast_to(np.arange(n, dtype=np.int64), (n, n))
    return _select(np.ascontiguousarray(cand), d2, k)


def next_neighbor_indices(coords, k: int, periodic_phi: bool = False) -> np.ndarray:
    """(N, 3) normalised (r, phi, eta) -> (N, k) int64 indices of the k nearest points with
    strictly larger r, nearest first (ties by index), -1 where fewer than k exist."""
    c = _prepare(coords, periodic_phi)
    n = c.shape[0]
    out = np.full((n, k), -1, dtype=np.int64)
    if n < 2 or k == 0:
        return out
    r = c[:, _R]
    by_r = np.argsort(r, kind="stable")
    r_sorted = r[by_r]
    # n_out[i]: how many points lie strictly outside r_i.
    n_out = n - np.searchsorted(r_sorted, r, side="right")

    # Points with a small outward set: brute force against that set (a suffix in r order).
    small = max(4 * k, 64)
    tail = np.flatnonzero((n_out > 0) & (n_out <= small))
    if tail.size:
        start = n - int(n_out[tail].max())
        cand = by_r[start:]
        d2 = pair_sq_dist(c[tail, None, :], c[None, cand, :], periodic_phi)
        d2[~(r[cand][None, :] > r[tail][:, None])] = np.inf
        out[tail] = _select(np.ascontiguousarray(np.broadcast_to(cand, d2.shape)), d2, k)

    rest = np.flatnonzero(n_out > small)
    if rest.size == 0:
        return out
    tree = cKDTree(c, boxsize=[0.0, 1.0, 0.0] if periodic_phi else None)
    m = min(n, 2 * k + 16)
    while rest.size:
        dist, cand = tree.query(c[rest], k=m)
        cand = cand.astype(np.int64, copy=False)
        d2 = pair_sq_dist(c[rest][:, None, :], c[cand], periodic_phi)
        d2[~(r[cand] > r[rest][:, None])] = np.inf
        if m >= n:
            done = np.ones(rest.size, dtype=bool)  # every point was a candidate
        else:
            bound2 = dist[:, -1] ** 2 * (1.0 - _BOUND_MARGIN)
            done = (d2 < bound2[:, None]).sum(axis=1) >= k
        out[rest[done]] = _select(cand[done], d2[done], k)
        rest = rest[~done]
        m = min(n, m * 4)
    return out


def gather_targets(coords: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) coords and (N, k) neighbour indices -> targets (N, k, 3) float32 (0 where missing)
    and target_mask (N, k) bool. Targets are the neighbours' coords as given (phi unwrapped)."""
    mask = idx >= 0
    targets = np.asarray(coords, dtype=np.float32)[np.where(mask, idx, 0)]
    targets[~mask] = 0.0
    return targets, mask


def mean_neighbor_distance(coords: np.ndarray, idx: np.ndarray, periodic_phi: bool = False) -> tuple[float, float]:
    """An event's difficulty proxy: mean and mean squared distance over all valid (i, j) pairs;
    NaN when the event has no valid pair."""
    c = _prepare(coords, periodic_phi)
    mask = idx >= 0
    if not mask.any():
        return float("nan"), float("nan")
    rows = np.nonzero(mask)[0]
    d2 = pair_sq_dist(c[rows], c[idx[mask]], periodic_phi)
    return float(np.sqrt(d2).mean()), float(d2.mean())
