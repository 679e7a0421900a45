"""Cartesian spacepoints -> normalised (r, phi, eta) in [0, 1], and standardised energy.

Column order everywhere in fm4npp.serialize: coords[:, 0] = r, [:, 1] = phi, [:, 2] = eta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fm4npp.sim.config import DEFAULT_DETECTOR
from fm4npp.sim.geometry import get_detector

R, PHI, ETA = 0, 1, 2


@dataclass(frozen=True)
class RadialGeometry:
    """What serialization needs from a detector: its measurement-layer radii (pad rows, silicon
    layers, wires) and module r boundaries [cm], all subsystems together."""

    layer_radii_cm: tuple[float, ...]
    module_edges_cm: tuple[tuple[float, float], ...]


def detector_geometry(name: str = DEFAULT_DETECTOR) -> RadialGeometry:
    """Layer radii and module edges of `fm4npp.sim.geometry.get_detector(name)` (the one
    geometry definition; sim is below serialize, so this is a plain downward import).
    An unknown name is a ValueError listing the known detectors."""
    det = get_detector(name)
    radii = tuple(float(r) for r in np.asarray(det.layer_radii, dtype=float).ravel())
    edges = tuple((float(lo), float(hi)) for lo, hi in np.asarray(det.module_edges, dtype=float))
    return RadialGeometry(radii, edges)


def cylindrical(x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) [cm] -> (r [cm], phi [rad] in [-pi, pi], eta). float64."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    r = np.hypot(x, y)
    phi = np.arctan2(y, x)
    # eta = -ln tan(theta/2) = asinh(z / r); finite for r > 0, which a TPC hit always has.
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(z / r)
    return r, phi, eta


def snap_to_layers(r: np.ndarray, layer_radii_cm, tol_cm: float) -> np.ndarray:
    """Replace r by the nearest layer radius when within tol_cm.

    Spacepoints sit on pad-row centres; float32 x, y make sqrt(x^2+y^2) jitter by ~1e-5 cm,
    which would otherwise split one layer into many radii for the strict r_j > r_i rule.
    """
    if tol_cm <= 0 or len(layer_radii_cm) == 0:
        return r
    radii = np.sort(np.asarray(layer_radii_cm, dtype=np.float64))
    pos = np.searchsorted(radii, r)
    lo = radii[np.clip(pos - 1, 0, len(radii) - 1)]
    hi = radii[np.clip(pos, 0, len(radii) - 1)]
    nearest = np.where(np.abs(r - lo) <= np.abs(r - hi), lo, hi)
    return np.where(np.abs(r - nearest) <= tol_cm, nearest, r)


def z_measured(sigma_z, n: int) -> np.ndarray:
    """(n,) bool: which points have a measured z, from the schema's ``hit_sigma_z`` (+inf: not
    measured, an axial wire whose z is stored as 0; NaN: unknown, taken as measured; None, a
    file before schema version 3: all measured)."""
    if sigma_z is None:
        return np.ones(n, dtype=bool)
    s = np.asarray(sigma_z, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"hit_sigma_z has {s.shape[0] if s.ndim else 0} values for {n} hits")
    return ~np.isposinf(s)


def normalise(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (values - lo) / (hi - lo)


def normalised_coords(x, y, z, ranges: dict, layer_radii_cm=(), snap_tol_cm: float = 0.0) -> np.ndarray:
    """(N,) x, y, z [cm] -> (N, 3) float32 normalised (r, phi, eta).

    ranges: {"r_cm": (lo, hi), "phi": (lo, hi), "eta": (lo, hi)}. Values outside a range map
    outside [0, 1]; nothing is clipped, so distances stay faithful.
    """
    r, phi, eta = cylindrical(x, y, z)
    r = snap_to_layers(r, layer_radii_cm, snap_tol_cm)
    out = np.empty((r.shape[0], 3), dtype=np.float32)
    out[:, R] = normalise(r, *ranges["r_cm"])
    out[:, PHI] = normalise(phi, *ranges["phi"])
    out[:, ETA] = normalise(eta, *ranges["eta"])
    return out


def transform_energy(energy, transform: str) -> np.ndarray:
    """Energy [ADC-like] before standardisation: log1p tames its heavy tail (mean 253, std 269
    in TPCpp-10M with a long tail to 6000+); "linear" is the public code's choice."""
    e = np.asarray(energy, dtype=np.float64)
    if transform == "log":
        return np.log1p(np.clip(e, 0.0, None))
    if transform == "linear":
        return e
    raise ValueError(f"unknown energy transform {transform!r}")


def standardised_energy(energy, transform: str, mean: float, std: float) -> np.ndarray:
    return ((transform_energy(energy, transform) - mean) / std).astype(np.float32)
