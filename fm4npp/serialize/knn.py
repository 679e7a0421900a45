"""k-next-nearest-neighbour targets: for each point i, its k nearest points with r_j > r_i.

Distances are Euclidean in normalised (r, phi, eta) (columns 0, 1, 2), optionally with phi
periodic (period 1 in normalised units). Results are sorted by distance, ties by index, and
padded with -1 where fewer than k points lie strictly outside r_i.

`next_neighbor_indices` never builds the N x N matrix: radial slabs, each answered by a
KD-tree over everything outside it plus brute force inside it (see its docstring). Every row
is ranked with the same float64 arithmetic as the brute-force reference, so the two agree
exactly, ties included (`dense_next_neighbor_indices` is that reference).
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
    dr = a[..., 0] - b[..., 0]
    dphi = a[..., 1] - b[..., 1]
    deta = a[..., 2] - b[..., 2]
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


def _sorted_pick(cand: np.ndarray, d2: np.ndarray, k: int) -> np.ndarray:
    """Full (d2, index) sort per row, first k columns."""
    key_idx = np.where(np.isfinite(d2), cand, np.iinfo(np.int64).max)
    order = np.lexsort((key_idx, d2), axis=-1)[:, :k]
    out = np.take_along_axis(cand, order, axis=1)
    out[~np.isfinite(np.take_along_axis(d2, order, axis=1))] = -1
    return out


def _select(cand: np.ndarray, d2: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k candidates with smallest (d2, index); invalid entries carry d2 = inf.
    Returns (rows, k) int64 with -1 where fewer than k are valid.

    argpartition finds the k smallest in linear time; only rows where a distance tie straddles
    the k-th place need the full (d2, index) sort."""
    rows, width = d2.shape
    if width <= k:
        out = _sorted_pick(cand, d2, width)
        return np.concatenate([out, np.full((rows, k - width), -1, np.int64)], axis=1)
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    part_d2 = np.take_along_axis(d2, part, axis=1)
    kth = part_d2.max(axis=1)
    tied = np.isfinite(kth) & ((d2 <= kth[:, None]).sum(axis=1) > k)
    out = _sorted_pick(np.take_along_axis(cand, part, axis=1), part_d2, k)
    if tied.any():
        out[tied] = _sorted_pick(cand[tied], d2[tied], k)
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


def _slab_starts(r_sorted: np.ndarray, size: int) -> list[int]:
    """Cut r-sorted positions into slabs of ~size points, only where r changes (a radius shared
    by several points never straddles two slabs)."""
    n = len(r_sorted)
    starts, p = [0], size
    while p < n:
        p = int(np.searchsorted(r_sorted, r_sorted[p - 1], side="right"))  # end of that radius
        if p >= n:
            break
        starts.append(p)
        p += size
    return starts


def next_neighbor_indices(coords, k: int, periodic_phi: bool = False, slab_size: int | None = None) -> np.ndarray:
    """(N, 3) normalised (r, phi, eta) -> (N, k) int64 indices of the k nearest points with
    strictly larger r, nearest first (ties by index), -1 where fewer than k exist.

    Radial slabs: points sorted by r are cut into slabs (never inside a shared radius). For a
    slab, the candidates are the points of later slabs (a KD-tree over that suffix, queried
    for k + 1 neighbours) and the points of the slab itself with larger r (brute force, the
    slab is small). A row is final once its k-th pick is strictly closer than the tree's last
    returned neighbour (so nothing equally close was left out); otherwise the tree is asked
    for more. Cost ~ (number of slabs) x (tree build over <= N points) + N x slab size.
    """
    c = _prepare(coords, periodic_phi)
    n = c.shape[0]
    out = np.full((n, k), -1, dtype=np.int64)
    if n < 2 or k == 0:
        return out
    by_r = np.argsort(c[:, _R], kind="stable")
    cs = c[by_r]
    rs = cs[:, _R]
    size = slab_size or max(2 * k, int(2 * np.sqrt(n)))
    starts = _slab_starts(rs, size)
    ends = starts[1:] + [n]
    boxsize = [0.0, 1.0, 0.0] if periodic_phi else None
    for a, b in zip(starts, ends):
        q = cs[a:b]
        d2_own = pair_sq_dist(q[:, None, :], q[None, :, :], periodic_phi)
        d2_own[~(rs[None, a:b] > rs[a:b, None])] = np.inf
        # The slab's own best k by (d2, index): all the slab can contribute to the final k.
        own = _select(np.ascontiguousarray(np.broadcast_to(by_r[a:b], d2_own.shape)), d2_own, k)
        if b == n:  # outermost slab: nothing beyond it
            out[by_r[a:b]] = own
            continue
        own_d2 = np.where(own >= 0, pair_sq_dist(q[:, None, :], c[np.maximum(own, 0)], periodic_phi), np.inf)
        tree = cKDTree(cs[b:], boxsize=boxsize)
        n_suffix = n - b
        rows = np.arange(b - a)
        m = min(n_suffix, k + 1)
        while rows.size:
            dist, ii = tree.query(q[rows], k=m)
            ii = ii.reshape(rows.size, m).astype(np.int64) + b
            dist = dist.reshape(rows.size, m)
            d2 = np.concatenate([own_d2[rows], pair_sq_dist(q[rows][:, None, :], cs[ii], periodic_phi)], axis=1)
            picked = _select(np.concatenate([own[rows], by_r[ii]], axis=1), d2, k)
            if m >= n_suffix:
                done = np.ones(rows.size, dtype=bool)  # the whole suffix was a candidate
            else:
                # Final only if the k-th pick is strictly inside the tree's query radius.
                kth = np.partition(d2, k - 1, axis=1)[:, k - 1]
                done = kth < dist[:, -1] ** 2 * (1.0 - _BOUND_MARGIN)
            out[by_r[a + rows[done]]] = picked[done]
            rows = rows[~done]
            m = min(n_suffix, 4 * m)
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
