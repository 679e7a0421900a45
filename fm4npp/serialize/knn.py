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


def _sorted_pick(cand: np.ndarray, d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (d2, index) and keep k columns: (indices with -1 where d2 = inf, d2)."""
    order = np.argsort(d2, axis=1)[:, :k]
    sd2 = np.take_along_axis(d2, order, axis=1)
    # Rows with a distance tie anywhere in the kept part: redo them with the index tie-break.
    with np.errstate(invalid="ignore"):  # inf - inf in the padding
        tie = (np.diff(sd2, axis=1) == 0) & np.isfinite(sd2[:, 1:])
    if d2.shape[1] > k:  # a tie across the cut
        tie_cut = np.isfinite(sd2[:, -1]) & ((d2 == sd2[:, -1:]).sum(axis=1) > 1)
    else:
        tie_cut = np.zeros(len(d2), dtype=bool)
    redo = tie.any(axis=1) | tie_cut
    if redo.any():
        key_idx = np.where(np.isfinite(d2[redo]), cand[redo], np.iinfo(np.int64).max)
        order[redo] = np.lexsort((key_idx, d2[redo]), axis=-1)[:, :k]
        sd2 = np.take_along_axis(d2, order, axis=1)
    out = np.take_along_axis(cand, order, axis=1)
    out[~np.isfinite(sd2)] = -1
    return out, sd2


def _select(cand: np.ndarray, d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k candidates with smallest (d2, index), nearest first; invalid entries
    carry d2 = inf. Returns ((rows, k) int64 with -1 where fewer than k are valid, their d2).

    argpartition narrows wide rows to k columns in linear time; rows where a distance tie
    straddles the k-th place keep all their columns for the exact (d2, index) sort."""
    rows, width = d2.shape
    if width <= k:
        out, sd2 = _sorted_pick(cand, d2, width)
        pad = k - width
        return (np.concatenate([out, np.full((rows, pad), -1, np.int64)], axis=1),
                np.concatenate([sd2, np.full((rows, pad), np.inf)], axis=1))
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    part_d2 = np.take_along_axis(d2, part, axis=1)
    kth = part_d2.max(axis=1)
    tied = np.isfinite(kth) & ((d2 <= kth[:, None]).sum(axis=1) > k)
    out, sd2 = _sorted_pick(np.take_along_axis(cand, part, axis=1), part_d2, k)
    if tied.any():
        out[tied], sd2[tied] = _sorted_pick(cand[tied], d2[tied], k)
    return out, sd2


def dense_next_neighbor_indices(coords, k: int, periodic_phi: bool = False) -> np.ndarray:
    """Reference: the full N x N matrix (as in the public code), exact ties by index."""
    c = _prepare(coords, periodic_phi)
    n = c.shape[0]
    if n == 0 or k == 0:
        return np.full((n, k), -1, dtype=np.int64)
    d2 = pair_sq_dist(c[:, None, :], c[None, :, :], periodic_phi)
    d2[~(c[None, :, _R] > c[:, None, _R])] = np.inf
    cand = np.broadcast_to(np.arange(n, dtype=np.int64), (n, n))
    key_idx = np.where(np.isfinite(d2), cand, np.iinfo(np.int64).max)
    order = np.lexsort((key_idx, d2), axis=-1)[:, :k]  # plain full sort: the reference
    out = np.take_along_axis(cand, order, axis=1)
    out[~np.isfinite(np.take_along_axis(d2, order, axis=1))] = -1
    if k > n:
        out = np.concatenate([out, np.full((n, k - n), -1, np.int64)], axis=1)
    return out


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


class _Slabs:
    """Points sorted by r and cut into radial slabs; answers one slab's rows exactly."""

    def __init__(self, c: np.ndarray, k: int, periodic_phi: bool, size: int):
        self.c, self.k, self.periodic = c, k, periodic_phi
        self.n = len(c)
        self.by_r = np.argsort(c[:, _R], kind="stable")
        self.cs = c[self.by_r]
        self.rs = self.cs[:, _R]
        self.starts = _slab_starts(self.rs, size)
        self.ends = self.starts[1:] + [self.n]
        self.boxsize = [0.0, 1.0, 0.0] if periodic_phi else None
        self.trees: dict[int, cKDTree] = {}
        self.leafsize = 16

    def tree(self, b: int) -> cKDTree:
        """KD-tree over the suffix of sorted positions b..n-1 (everything outside the slab)."""
        if b not in self.trees:
            self.trees[b] = cKDTree(self.cs[b:], leafsize=self.leafsize, boxsize=self.boxsize,
                                    balanced_tree=False, compact_nodes=False)
        return self.trees[b]

    def solve(self, a: int, b: int, rows: np.ndarray, m: int, out: np.ndarray) -> None:
        """General path for rows (offsets in slab [a, b)): own outer points by brute force,
        the suffix by the tree, m growing until every row is provably complete."""
        k, cs, rs, by_r = self.k, self.cs, self.rs, self.by_r
        q = cs[a:b]
        own = own_d2 = None
        if rs[a] != rs[b - 1]:  # several radii in the slab: its own outer points are candidates
            d2_own = pair_sq_dist(q[rows][:, None, :], q[None, :, :], self.periodic)
            d2_own[~(rs[None, a:b] > rs[a + rows, None])] = np.inf
            own, own_d2 = _select(np.ascontiguousarray(np.broadcast_to(by_r[a:b], d2_own.shape)), d2_own, k)
        if b == self.n:  # outermost slab: nothing beyond it
            if own is not None:
                out[by_r[a + rows]] = own
            return
        n_suffix = self.n - b
        m = min(n_suffix, m)
        sel = np.arange(rows.size)  # rows still open, as positions in `rows`
        while sel.size:
            dist, ii = self.tree(b).query(q[rows[sel]], k=m)
            ii = ii.reshape(sel.size, m).astype(np.int64) + b
            dist = dist.reshape(sel.size, m)
            cand = by_r[ii]
            d2 = pair_sq_dist(q[rows[sel]][:, None, :], cs[ii], self.periodic)
            if own is not None:
                cand = np.concatenate([own[sel], cand], axis=1)
                d2 = np.concatenate([own_d2[sel], d2], axis=1)
            picked, picked_d2 = _select(cand, d2, k)
            if m >= n_suffix:
                done = np.ones(sel.size, dtype=bool)  # the whole suffix was a candidate
            else:
                # Final only if the k-th pick is strictly inside the tree's query radius.
                done = picked_d2[:, -1] < dist[:, -1] ** 2 * (1.0 - _BOUND_MARGIN)
            out[by_r[a + rows[sel[done]]]] = picked[done]
            sel = sel[~done]
            m = min(n_suffix, 4 * m)


def next_neighbor_indices(coords, k: int, periodic_phi: bool = False, slab_size: int | None = None) -> np.ndarray:
    """(N, 3) normalised (r, phi, eta) -> (N, k) int64 indices of the k nearest points with
    strictly larger r, nearest first (ties by index), -1 where fewer than k exist.

    Radial slabs: points sorted by r are cut into slabs of ~slab_size points, never inside a
    shared radius (default: one slab per radius when there are few distinct radii, as with
    detector layers). For a
    slab, the candidates are the points of later slabs (a KD-tree over that suffix, queried
    for k + 1 neighbours) and the slab's own points with larger r (brute force; none when the
    slab is a single layer). A row is final once its k-th pick is strictly closer than the
    tree's last returned neighbour (nothing equally close was left out); otherwise the tree is
    asked for more. Single-radius slabs, the common case, are post-processed in one batch.
    Cost ~ (slabs) x (tree build over <= N points) + N k-queries.
    """
    c = _prepare(coords, periodic_phi)
    n = c.shape[0]
    out = np.full((n, k), -1, dtype=np.int64)
    if n < 2 or k == 0:
        return out
    if slab_size is None:
        # Few distinct radii (detector layers): one slab per radius, all on the fast path.
        # Otherwise slabs of ~2 sqrt(N) points balance tree builds against brute force.
        n_radii = int(np.count_nonzero(np.diff(np.sort(c[:, _R]))) + 1)
        slab_size = 1 if n_radii <= max(64, n // k) else max(2 * k, int(2 * np.sqrt(n)))
    sl = _Slabs(c, k, periodic_phi, slab_size)
    fast = []  # (a, b, dist, ii) of single-radius slabs with >= k + 1 points beyond them
    for a, b in zip(sl.starts, sl.ends):
        if sl.rs[a] == sl.rs[b - 1] and n - b > k:
            dist, ii = sl.tree(b).query(sl.cs[a:b], k=k + 1)
            fast.append((a, b, dist.reshape(b - a, k + 1), ii.reshape(b - a, k + 1).astype(np.int64) + b))
        else:
            sl.solve(a, b, np.arange(b - a), k + 1, out)
    if not fast:
        return out
    pos = np.concatenate([np.arange(a, b) for a, b, _, _ in fast])
    dist = np.concatenate([f[2] for f in fast])
    ii = np.concatenate([f[3] for f in fast])
    cand = sl.by_r[ii]
    # pair_sq_dist's formula, on contiguous columns (cheaper gathers, identical arithmetic).
    dr, dphi, deta = (sl.cs[pos, j][:, None] - np.ascontiguousarray(sl.cs[:, j])[ii] for j in range(3))
    if periodic_phi:
        dphi = np.abs(dphi)
        dphi = np.minimum(dphi, 1.0 - dphi)
    d2 = (dr * dr + dphi * dphi) + deta * deta
    # The tree lists neighbours by distance; where our d2 strictly increases along the row,
    # that is already the exact (d2, index) order.
    picked, picked_d2 = cand[:, :k].copy(), d2[:, :k].copy()
    odd = ~(np.diff(d2, axis=1) > 0).all(axis=1)
    if odd.any():
        picked[odd], picked_d2[odd] = _select(cand[odd], d2[odd], k)
    done = picked_d2[:, -1] < dist[:, -1] ** 2 * (1.0 - _BOUND_MARGIN)
    out[sl.by_r[pos[done]]] = picked[done]
    still_open = pos[~done]  # rows needing a wider search (exact distance ties): rare
    for a, b, _, _ in fast if still_open.size else ():
        rows = still_open[(still_open >= a) & (still_open < b)] - a
        if rows.size:
            sl.solve(a, b, rows, 4 * (k + 1), out)
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
