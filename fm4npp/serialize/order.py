"""Orders that turn an event's point set into a sequence, all behind `serialize_order`.

- "raster" (the paper's hierarchical raster scan): points are put in the boxes of the
  (r, eta, phi) grid of the bins file; boxes are visited by their centres in lexicographic
  (r, phi, eta) order (config box_order; r first = innermost region outward), and within a box
  points go by r (then phi, eta, index).
- "radial": a global sort by r (then phi, eta).
- "zorder": Morton code of (r, phi, eta) quantised to 10 bits each.
- "hilbert": 3D Hilbert index of the same quantisation (Skilling's transpose algorithm).
- "random": a uniform permutation from the given generator.
All ties end with the original index, so every order is deterministic.
"""

from __future__ import annotations

import numpy as np

from fm4npp.serialize.coords import ETA, PHI, R

_BITS = 10  # per axis for the space-filling curves: 1024 cells along each normalised axis


def _lex(*keys_major_first) -> np.ndarray:
    n = len(keys_major_first[0])
    return np.lexsort((np.arange(n),) + tuple(reversed(keys_major_first)))


def raster_order(coords: np.ndarray, bins, box_order: str = "r_phi_eta") -> np.ndarray:
    box = bins.box_indices(coords)  # (N, 3): r, eta, phi bin
    ir, ieta, iphi = box[:, 0], box[:, 1], box[:, 2]
    if box_order == "r_phi_eta":
        major = (ir, iphi, ieta)
    elif box_order == "r_eta_phi":
        major = (ir, ieta, iphi)
    else:
        raise ValueError(f"unknown box order {box_order!r}")
    return _lex(*major, coords[:, R], coords[:, PHI], coords[:, ETA])


def radial_order(coords: np.ndarray) -> np.ndarray:
    return _lex(coords[:, R], coords[:, PHI], coords[:, ETA])


def quantise(coords: np.ndarray, bits: int = _BITS) -> np.ndarray:
    """Normalised coords -> integer cells in [0, 2^bits - 1] (values outside [0, 1] clipped)."""
    top = (1 << bits) - 1
    return np.clip(np.floor(np.asarray(coords, np.float64) * (1 << bits)), 0, top).astype(np.uint64)


def morton_index(cells: np.ndarray, bits: int = _BITS) -> np.ndarray:
    """(N, 3) integer cells -> Morton (Z-order) codes; axis 0 is the most significant."""
    code = np.zeros(cells.shape[0], dtype=np.uint64)
    for b in range(bits - 1, -1, -1):
        for axis in range(3):
            code = (code << np.uint64(1)) | ((cells[:, axis] >> np.uint64(b)) & np.uint64(1))
    return code


def hilbert_index(cells: np.ndarray, bits: int = _BITS) -> np.ndarray:
    """(N, 3) integer cells in [0, 2^bits) -> 3D Hilbert curve index (J. Skilling, "Programming
    the Hilbert curve", AIP Conf. Proc. 707, 2004: AxestoTranspose, then bit interleave)."""
    x = np.array(cells, dtype=np.uint64, copy=True)
    n = x.shape[1]
    one = np.uint64(1)
    q = one << np.uint64(bits - 1)
    while q > one:  # inverse undo excess work
        p = q - one
        for i in range(n):
            hit = (x[:, i] & q) != 0
            x[hit, 0] ^= p
            miss = ~hit
            t = (x[miss, 0] ^ x[miss, i]) & p
            x[miss, 0] ^= t
            x[miss, i] ^= t
        q >>= one
    for i in range(1, n):  # Gray encode
        x[:, i] ^= x[:, i - 1]
    t = np.zeros(x.shape[0], dtype=np.uint64)
    q = one << np.uint64(bits - 1)
    while q > one:
        hit = (x[:, n - 1] & q) != 0
        t[hit] ^= q - one
        q >>= one
    x ^= t[:, None]
    return morton_index(x, bits)  # the transpose form interleaved = the Hilbert index


def serialize_order(coords, method: str, bins=None, rng: np.random.Generator | None = None,
                    box_order: str = "r_phi_eta") -> np.ndarray:
    """(N, 3) normalised (r, phi, eta) -> permutation (N,) int64: position -> original index."""
    coords = np.asarray(coords)
    n = coords.shape[0]
    if method == "raster":
        if bins is None:
            raise ValueError("the raster order needs the fitted bins")
        perm = raster_order(coords, bins, box_order)
    elif method == "radial":
        perm = radial_order(coords)
    elif method == "zorder":
        perm = _lex(morton_index(quantise(coords)))
    elif method == "hilbert":
        perm = _lex(hilbert_index(quantise(coords)))
    elif method == "random":
        if rng is None:
            raise ValueError("the random order needs an explicit numpy Generator (seeded)")
        perm = rng.permutation(n)
    else:
        raise ValueError(f"unknown serialization order {method!r}")
    return np.asarray(perm, dtype=np.int64)
