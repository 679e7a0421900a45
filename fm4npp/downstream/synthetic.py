"""Toy serialized events for tests and smoke runs (no simulation, no serialization needed).

Tracks are curved lines in normalised (r, phi, eta): one point per layer from an inner radius
outward, phi drifting with a per-track curvature; each track has a PID class and a mean
energy that depends on it; a few noise points per event are scattered short stubs. Points are
sorted by r (a crude stand-in for the raster-scan order). Same contract as fm4npp.serialize.
"""

from __future__ import annotations

import numpy as np


def toy_event(rng: np.random.Generator, event_id: int, n_tracks: int = 6, n_layers: int = 24,
              n_noise: int = 6) -> dict:
    coords, energy, tid, pid, noise = [], [], [], [], []
    r = (np.arange(n_layers) + 0.5) / n_layers
    for t in range(n_tracks):
        cls = int(rng.choice(5, p=[0.1, 0.6, 0.1, 0.1, 0.1]))
        phi0, eta0, curv = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.normal(0, 0.08)
        start = int(rng.integers(0, n_layers // 3))
        rr = r[start:]
        phi = phi0 + curv * rr ** 2 + rng.normal(0, 0.002, rr.size)
        eta = eta0 + rng.normal(0, 0.002, rr.size)
        coords.append(np.stack([rr, phi, eta], 1))
        energy.append(rng.normal(0.5 * cls - 1.0, 0.3, rr.size))
        tid += [t] * rr.size
        pid += [cls] * rr.size
        noise += [False] * rr.size
    for k in range(n_noise):
        c = rng.uniform(0.05, 0.95, 3)
        coords.append(c[None, :])
        energy.append(np.array([rng.normal(1.5, 0.3)]))
        tid.append(n_tracks + k)
        pid.append(4)
        noise.append(True)
    coords = np.concatenate(coords).astype(np.float32)
    order = np.lexsort((coords[:, 1], coords[:, 0]))
    return {
        "coords": coords[order],
        "energy": np.concatenate(energy).astype(np.float32)[order],
        "track_id": np.asarray(tid, np.int32)[order],
        "pid_class": np.asarray(pid, np.int8)[order],
        "noise": np.asarray(noise, bool)[order],
        "event_id": np.int64(event_id),
        "order": order.astype(np.int64),
    }


def toy_events(n: int, seed: int = 0, **kw) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [toy_event(rng, seed * 100000 + i, **kw) for i in range(n)]
