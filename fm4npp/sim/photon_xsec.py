"""Photon cross sections per gram (pair, Compton, photo-effect) and Compton/photo-electron kinematics."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import secondaries as sec
from fm4npp.sim.physics_list import effective_za

ME = sec.ME
N_A = 6.02214076e23
R_E = 2.8179403262e-13  # classical electron radius [cm]
ALPHA = 1 / 137.035999


def mu_pair(e, mat):
    """Pair production [cm^2/g]: the complete-screening limit 7/9 / X0 times the ratio of the
    unscreened Bethe-Heitler bracket 28/9 ln(2E/m) - 218/27 to the screened one
    28/9 ln(183 Z^-1/3) - 2/27 (Bethe-Heitler, as in Rossi "High-energy particles" 5.8), capped
    at 1. The unscreened form vanishes at 3.4 MeV: the real (small) cross section between
    1.022 and ~3.4 MeV is dropped."""
    z, _ = effective_za(mat.z_over_a, mat.x0_g_cm2)
    k = np.maximum(e / ME, 1.0)
    ratio = (28 / 9 * np.log(2 * k) - 218 / 27) / (28 / 9 * np.log(183 * z ** (-1 / 3)) - 2 / 27)
    return np.clip(ratio, 0.0, 1.0) * (7 / 9) / mat.x0_g_cm2 * (e > 2 * ME)


def sigma_klein_nishina(e):
    """Klein-Nishina total cross section per electron [cm^2] (e in GeV)."""
    k = e / ME
    l2 = np.log1p(2 * k)
    return 2 * np.pi * R_E**2 * ((1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - l2 / k)
                                 + l2 / (2 * k) - (1 + 3 * k) / (1 + 2 * k) ** 2)


def mu_compton(e, mat):
    """Compton scattering on free electrons [cm^2/g]: sigma_KN N_A <Z/A> (binding neglected,
    which overestimates it below ~10 keV)."""
    return sigma_klein_nishina(e) * N_A * mat.z_over_a


def mu_photo(e, mat):
    """Photo-absorption [cm^2/g]: the K-shell Born cross section
    sigma_K = (8 pi r_e^2 / 3) 4 sqrt 2 Z^5 alpha^4 (m/E)^(7/2) (Heitler), times 5/4 for the
    outer shells, per atom of the effective (Z, A). Valid above the K edge (3.2 keV in Ar) and
    below ~m_e; a factor ~2 approximation elsewhere, negligible there against Compton."""
    z, a = effective_za(mat.z_over_a, mat.x0_g_cm2)
    sk = 8 * np.pi * R_E**2 / 3 * 4 * np.sqrt(2) * z**5 * ALPHA**4 * (ME / e) ** 3.5
    return 1.25 * sk * N_A / a


def mu_total(e, mat):
    """(pair, Compton, photo, total) mass attenuation coefficients [cm^2/g]."""
    mp, mc, mf = mu_pair(e, mat), mu_compton(e, mat), mu_photo(e, mat)
    return mp, mc, mf, mp + mc + mf


def sample_compton(e, rng):
    """Klein-Nishina sampling of eps = E'/E on [1/(1+2k), 1] (Butcher & Messel, as in Geant4's
    G4KleinNishinaCompton): returns (eps, cos theta of the scattered photon)."""
    n = len(e)
    k = e / ME
    eps0 = 1 / (1 + 2 * k)
    a1 = -np.log(eps0)
    a2 = a1 + 0.5 * (1 - eps0**2)
    eps = np.empty(n)
    onecost = np.empty(n)
    todo = np.arange(n)
    while len(todo):
        u1, u2, u3 = rng.random((3, len(todo)))
        e0, aa1, aa2, kk = eps0[todo], a1[todo], a2[todo], k[todo]
        first = aa1 / aa2 > u1
        ep = np.where(first, np.exp(-aa1 * u2), np.sqrt(e0**2 + (1 - e0**2) * u2))
        oc = (1 - ep) / (ep * kk)
        sint2 = oc * (2 - oc)
        ok = 1 - ep * sint2 / (1 + ep**2) >= u3
        eps[todo[ok]] = ep[ok]
        onecost[todo[ok]] = oc[ok]
        todo = todo[~ok]
    return eps, 1 - onecost


def photoelectron_cos(e, rng):
    """Photo-electron polar angle to the photon: Sauter's K-shell distribution
    sin^2 t / (1 - beta cos t)^4 (beta of a photo-electron with T = E, binding neglected),
    by rejection against its maximum."""
    n = len(e)
    t = e
    beta = np.sqrt(t * (t + 2 * ME)) / (t + ME)
    cos = np.empty(n)
    todo = np.arange(n)
    while len(todo):
        b = beta[todo]
        c = rng.uniform(-1, 1, len(todo))
        # maximum of (1-c^2)/(1-b c)^4 where b c^2 + c - 2 b = 0
        cm = np.where(b > 1e-6, (np.sqrt(1 + 8 * b * b) - 1) / (2 * np.maximum(b, 1e-6)), 0.0)
        fmax = (1 - cm**2) / (1 - b * cm) ** 4
        ok = rng.random(len(todo)) * fmax <= (1 - c**2) / (1 - b * c) ** 4
        cos[todo[ok]] = c[ok]
        todo = todo[~ok]
    return cos


def rotate(cos_t, ux, uy, uz, rng):
    """Unit vectors at polar angle acos(cos_t) around the unit vectors u, uniform in azimuth."""
    sin_t = np.sqrt(np.maximum(1 - cos_t**2, 0))
    phi = rng.uniform(0, 2 * np.pi, len(cos_t))
    e1, e2 = sec.orthonormal(ux, uy, uz)
    a, b = sin_t * np.cos(phi), sin_t * np.sin(phi)
    d = np.empty_like(e1)
    for j, u in enumerate((ux, uy, uz)):
        d[:, j] = cos_t * u + a * e1[:, j] + b * e2[:, j]
    return d
