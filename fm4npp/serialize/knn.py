"""k-next-nearest-neighbour targets: for each point i, its k nearest points with r_j > r_i.

Distances are Euclidean in normalised (r, phi, eta) (columns 0, 1, 2), optionally with phi
periodic (period 1 in normalised units). Results are sorted by distance, ties by index, and
padded with -1 where fewer than k points lie strictly outside r_i.

Points whose z is not measured (axial drift wires: ``z_measured`` False) have no real eta:
they are never anyone's neighbour (no target asks for a coordinate nobody measured), and their
own neighbours are ranked by (r, phi) alone (the eta term is 0).

`next_neighbor_indices` never builds the N x N matrix: a compiled radial sweep with exact
pruning (see its docstring). Every pair is ranked with the same float64 arithmetic as the
brute-force reference, so the two agree exactly, ties included
(`dense_next_neighbor_indices` is that reference).
"""

from __future__ import annotations

import numpy as np

_R, _PHI = 0, 1


def pair_sq_dist(a: np.ndarray, b: np.ndarray, periodic_phi: bool, a_has_eta=True) -> np.ndarray:
    """Squared distance between broadcastable (..., 3) float64 arrays — the one formula used by
    both the fast path and the reference, evaluated in a fixed order. ``a_has_eta`` False
    (broadcastable bool): the eta term of those ``a`` is 0."""
    dr = a[..., 0] - b[..., 0]
    dphi = a[..., 1] - b[..., 1]
    deta = np.where(a_has_eta, a[..., 2] - b[..., 2], 0.0)
    if periodic_phi:
        dphi = np.abs(dphi)
        dphi = np.minimum(dphi, 1.0 - dphi)
    return (dr * dr + dphi * dphi) + deta * deta


def _z_mask(z_measured, n: int) -> np.ndarray:
    if z_measured is None:
        return np.ones(n, dtype=np.bool_)
    zm = np.asarray(z_measured, dtype=np.bool_)
    if zm.shape != (n,):
        raise ValueError(f"z_measured must have shape ({n},), got {zm.shape}")
    return zm


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


def dense_next_neighbor_indices(coords, k: int, periodic_phi: bool = False, z_measured=None) -> np.ndarray:
    """Reference: the full N x N matrix (as in the public code), exact ties by index."""
    c = _prepare(coords, periodic_phi)
    n = c.shape[0]
    zm = _z_mask(z_measured, n)
    if n == 0 or k == 0:
        return np.full((n, k), -1, dtype=np.int64)
    d2 = pair_sq_dist(c[:, None, :], c[None, :, :], periodic_phi, zm[:, None])
    d2[~(c[None, :, _R] > c[:, None, _R]) | ~zm[None, :]] = np.inf
    cand = np.broadcast_to(np.arange(n, dtype=np.int64), (n, n))
    key_idx = np.where(np.isfinite(d2), cand, np.iinfo(np.int64).max)
    order = np.lexsort((key_idx, d2), axis=-1)[:, :k]  # plain full sort: the reference
    out = np.take_along_axis(cand, order, axis=1)
    out[~np.isfinite(np.take_along_axis(d2, order, axis=1))] = -1
    if k > n:
        out = np.concatenate([out, np.full((n, k - n), -1, np.int64)], axis=1)
    return out


def next_neighbors(coords, k: int, periodic_phi: bool = False,
                   z_measured=None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) normalised (r, phi, eta) -> ((N, k) int64 indices of the k nearest points with
    strictly larger r, nearest first (ties by index), -1 where fewer than k exist;
    (N, k) float64 their squared distances, inf where missing). z_measured (N,) bool, None =
    all: see the module docstring.

    A radial sweep (compiled, `_knn_kernel.outward_knn`): points sorted by r; each scans the
    points of larger r outward and stops once the radial gap alone exceeds its current k-th
    distance. Cost ~ N x (points within that radial gap), memory O(N k); never N x N.
    """
    c = _prepare(coords, periodic_phi)
    n = c.shape[0]
    zm = _z_mask(z_measured, n)
    idx = np.full((n, k), -1, dtype=np.int64)
    sq_dist = np.full((n, k), np.inf)
    if n < 2 or k == 0:
        return idx, sq_dist
    from fm4npp.serialize._knn_kernel import outward_knn

    by_r = np.argsort(c[:, _R], kind="stable")
    outward_knn(np.ascontiguousarray(c[by_r]), by_r.astype(np.int64), np.ascontiguousarray(zm[by_r]), int(k),
                bool(periodic_phi), idx, sq_dist)
    return idx, sq_dist


def next_neighbor_indices(coords, k: int, periodic_phi: bool = False, z_measured=None) -> np.ndarray:
    """The indices of `next_neighbors`: (N, k) int64, nearest first, -1 where missing."""
    return next_neighbors(coords, k, periodic_phi, z_measured)[0]


def gather_targets(coords: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) coords and (N, k) neighbour indices -> targets (N, k, 3) float32 (0 where missing)
    and target_mask (N, k) bool. Targets are the neighbours' coords as given (phi unwrapped)."""
    mask = idx >= 0
    targets = np.asarray(coords, dtype=np.float32)[np.where(mask, idx, 0)]
    targets[~mask] = 0.0
    return targets, mask


def gather_neighbor_values(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(N,) per-point values (e.g. energies) and (N, k) neighbour indices -> (N, k) float32 the
    neighbours' values, 0 where missing (mask: idx >= 0, the same as gather_targets')."""
    mask = idx >= 0
    out = np.asarray(values, dtype=np.float32)[np.where(mask, idx, 0)]
    out[~mask] = 0.0
    return out


def mean_neighbor_distance(sq_dist: np.ndarray) -> tuple[float, float]:
    """An event's difficulty proxy from `next_neighbors`' squared distances: mean and mean
    squared distance over all valid (i, j) pairs; NaN when the event has no valid pair."""
    d2 = sq_dist[np.isfinite(sq_dist)]
    if d2.size == 0:
        return float("nan"), float("nan")
    return float(np.sqrt(d2).mean()), float(d2.mean())
