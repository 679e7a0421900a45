"""Bethe stopping power with the density effect, vectorised (the charge of a hit; the transport's own copy is compiled in step_kernel)."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import secondaries as sec
from fm4npp.sim.secondaries import K_BETHE
from fm4npp.sim.geometry import Material

ME = sec.ME


def density_effect(bg: np.ndarray, mat: Material) -> np.ndarray:
    c, x0, x1, a, k, d0 = mat.sternheimer
    x = np.log10(np.maximum(bg, 1e-6))
    d = 2 * np.log(10) * x - c
    # the power terms are costly: evaluate them only where they apply
    low = x < x0
    mid = np.nonzero((x < x1) & ~low)[0]
    d[mid] += a * (x1 - x[mid]) ** k
    low = np.nonzero(low)[0]
    d[low] = d0 * 10 ** (2 * (x[low] - x0))
    return d


def bethe(bg, mass, z2, mat: Material, electron=None, t_cut=None):
    """Mass stopping power [GeV cm^2/g]: Bethe mean (t_cut None) or restricted to energy
    transfers below t_cut, with the density effect. Electrons use Wmax = T/2 (Moller)."""
    bg2 = bg * bg
    beta2 = bg2 / (1 + bg2)
    gamma = np.sqrt(1 + bg2)
    r = ME / mass
    wmax = 2 * ME * bg2 / (1 + 2 * gamma * r + r * r)
    if electron is not None:
        wmax = np.where(electron, 0.5 * (gamma - 1) * mass, wmax)
    tup = wmax if t_cut is None else np.minimum(wmax, t_cut)
    i = mat.i_ev * 1e-9
    bracket = (0.5 * np.log(2 * ME * bg2 * tup / (i * i)) - 0.5 * beta2 * (1 + tup / wmax)
               - 0.5 * density_effect(bg, mat))
    # Bethe fails for very slow particles (they stop within a step anyway)
    return K_BETHE * z2 * mat.z_over_a / beta2 * np.maximum(bracket, 0.5), wmax, beta2
