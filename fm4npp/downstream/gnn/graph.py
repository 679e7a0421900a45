"""Hit features and neighbour edges of one event (appendix C), from a KD-tree, never N x N.

A hit's location is (eta_hat, cos phi, sin phi, r_hat) computed from the serialized,
min-max-normalised coordinates (fm4npp.serialize.coords: columns r, phi, eta in [0, 1]):
eta_hat = 2 eta_n - 1 (the range mapped to [-1, 1]: with the default eta range (-2, 2) it is
eta / 2, the paper's eta / 1.96), phi = 2 pi phi_n (a full turn: equal to the true angle up to
a constant rotation of the (cos, sin) plane, which changes no distance), r_hat = r_n (the
normalised radius; the paper uses the layer index / 48, which differs only where layer spacing
is uneven). Node features are the standardised energy followed by the location.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from fm4npp.serialize.coords import ETA, PHI, R

N_FEATURES = 5  # energy + 4D location


def check_full_turn(phi_range) -> None:
    """The (cos, sin) of a normalised phi is only a rotation of the true angle's when the
    normalisation range spans exactly one turn."""
    lo, hi = (float(v) for v in phi_range)
    if not math.isclose(hi - lo, 2 * math.pi, rel_tol=1e-6):
        raise ValueError(f"GNN hit locations need a phi range of one full turn (2 pi), "
                         f"the bins have {phi_range}")


def hit_location(coords: np.ndarray) -> np.ndarray:
    """(N, 3) normalised (r, phi, eta) -> (N, 4) float32 (eta_hat, cos phi, sin phi, r_hat)."""
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"coords must be (N, 3) normalised (r, phi, eta), got shape {c.shape}")
    phi = 2 * np.pi * c[:, PHI]
    return np.stack([2 * c[:, ETA] - 1, np.cos(phi), np.sin(phi), c[:, R]], 1).astype(np.float32)


def hit_features(event: dict) -> np.ndarray:
    """(N, 5) float32: standardised energy, then hit_location."""
    energy = np.asarray(event["energy"], dtype=np.float32)[:, None]
    return np.concatenate([energy, hit_location(event["coords"])], 1)


def neighbour_edges(x: np.ndarray, k: int, radius: float) -> np.ndarray:
    """(2, E) int64 directed edges (source j, target i): each point i receives an edge from
    each of its ``k`` nearest other points closer than ``radius`` (Euclidean). Ties at equal
    distance are broken by the KD-tree, as in any kNN."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if k < 1 or radius <= 0:
        raise ValueError(f"need k >= 1 and radius > 0, got k={k}, radius={radius}")
    if n < 2:
        return np.zeros((2, 0), np.int64)
    kk = min(k + 1, n)  # + the point itself, which the query returns first
    dist, idx = cKDTree(x).query(x, k=kk, distance_upper_bound=radius)
    dist, idx = dist.reshape(n, kk), idx.reshape(n, kk)
    target = np.repeat(np.arange(n), kk).reshape(n, kk)
    # missing neighbours come back as index n; strictly closer than radius, never itself
    keep = (idx < n) & (idx != target) & (dist < radius)
    # a duplicate point can displace the point itself from the first column: cap at k
    keep &= np.cumsum(keep, axis=1) <= k
    return np.stack([idx[keep], target[keep]]).astype(np.int64)
