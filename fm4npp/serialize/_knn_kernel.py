"""Compiled core of `fm4npp.serialize.knn.next_neighbor_indices` (numba, imported lazily).

Plain float64 arithmetic, no fastmath: LLVM may not reorder or fuse (FMA) the operations, so
every distance is bit-identical to `knn.pair_sq_dist` and the result equals the brute force.
Single-threaded on purpose (one event per call; parallelism comes from events).
`cache=True` keeps the machine code in __pycache__ next to this file, so a new process (a Ray
worker) loads it instead of compiling again.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def outward_knn(cs, orig, zm, k, periodic, out, out_d2):
    """cs: (N, 3) float64 (r, phi, eta) sorted by r; orig: (N,) int64 original index of each
    row; zm: (N,) bool whether the row's z (so eta) is measured; out: (N, k) int64 filled with
    -1 and out_d2: (N, k) float64 filled with inf, both written at the original indices
    (neighbour indices and their squared distances).

    Rows without a measured z are never neighbours, and rank their own by (r, phi) alone
    (deta = 0, added like any other term, as in `knn.pair_sq_dist`).

    For each row, scan the rows of larger r in increasing r, keeping the k best (d2, index)
    sorted by insertion; stop once dr^2 alone exceeds the k-th d2 (r is sorted, and
    fl(dr^2 + x) >= dr^2 for x >= 0, so nothing later can enter)."""
    n = cs.shape[0]
    best_d = np.empty(k, np.float64)
    best_j = np.empty(k, np.int64)
    start = 0  # first row with r strictly larger than the current one
    for p in range(n):
        ri, pi, ei = cs[p, 0], cs[p, 1], cs[p, 2]
        if start <= p:
            start = p + 1
        while start < n and cs[start, 0] <= ri:
            start += 1
        cnt = 0
        for q in range(start, n):
            dr = ri - cs[q, 0]
            drr = dr * dr
            if cnt == k and drr > best_d[k - 1]:
                break
            if not zm[q]:
                continue
            dphi = pi - cs[q, 1]
            if periodic:
                dphi = abs(dphi)
                dphi = min(dphi, 1.0 - dphi)
            deta = ei - cs[q, 2] if zm[p] else 0.0
            d = (drr + dphi * dphi) + deta * deta
            j = orig[q]
            if cnt == k:
                if d > best_d[k - 1] or (d == best_d[k - 1] and j > best_j[k - 1]):
                    continue
                pos = k - 1
            else:
                pos = cnt
                cnt += 1
            while pos > 0 and (best_d[pos - 1] > d or (best_d[pos - 1] == d and best_j[pos - 1] > j)):
                best_d[pos] = best_d[pos - 1]
                best_j[pos] = best_j[pos - 1]
                pos -= 1
            best_d[pos] = d
            best_j[pos] = j
        o = orig[p]
        for m in range(cnt):
            out[o, m] = best_j[m]
            out_d2[o, m] = best_d[m]
