"""What follows a transport step, compiled (numba): its delta electrons, then its loss and scattering.

It replaces ~80 numpy calls per iteration, a fixed cost paid even when one looper is left.
The draws come from the caller's numpy Generator in the order the vectorised code made them
(for the gas class, then the solid one: the Poisson counts, then all energies, all
acceptances, all positions along the step, then the azimuths of the accepted ones; then the
scattering), so a seed gives the same events.
"""

from __future__ import annotations

import math

import numpy as np

from fm4npp.sim.secondaries import ME
from fm4npp.sim.step_kernel import _jit, _mn, _mx, lose_and_scatter, orthonormal

TWO_PI = 2 * np.pi


@_jit
def after_step(means, t_min, px, py, pz, m, ele, p, x0, y0, z0, cx, cy, rho, a0, da, s, ekin, de, th2, t_stop,
               scatter, rng):
    """What follows a step, in one call (a numpy Generator costs ~15 us to type at each call
    into numba): its delta electrons (:func:`deltas`), then the momentum loss and scattering at
    its end (:func:`fm4npp.sim.step_kernel.lose_and_scatter`). Returns (delta parents, delta
    rows, px, py, pz, stopped)."""
    src0, out0 = deltas(means[0], t_min[0], px, py, pz, m, ele, p, x0, y0, z0, cx, cy, rho, a0, da, s, rng)
    src1, out1 = deltas(means[1], t_min[1], px, py, pz, m, ele, p, x0, y0, z0, cx, cy, rho, a0, da, s, rng)
    npx, npy, npz, stopped = lose_and_scatter(px, py, pz, m, p, ekin, de, th2, t_stop, scatter, rng)
    return np.concatenate((src0, src1)), np.concatenate((out0, out1)), npx, npy, npz, stopped


@_jit
def deltas(mean, tm, px, py, pz, m, ele, p, x0, y0, z0, cx, cy, rho, a0, da, s, rng):
    """Delta electrons above tm of the step of every particle (mean: their mean counts):
    parent index and rows (vx, vy, vz, px, py, pz): the production point on the helix (x0, y0,
    z0: the step's start; cx, cy, rho, a0, da: its circle) and the momentum. px, py, pz: the
    parents' momenta at the step end, p at its start. Energies from (1 - beta^2 T/Wmax)/T^2 on
    [tm, Wmax], cos(theta) = (T/p_e) (E + m_e)/p around the parent's direction there."""
    n = len(mean)
    nd = np.zeros(n, np.int64)
    for i in range(n):
        if mean[i] != 0:  # Poisson(0) draws nothing: as numpy, which sampled the non-zero means only
            nd[i] = rng.poisson(mean[i])
    src = np.repeat(np.arange(n), nd)
    k = len(src)
    t, wmax, beta2 = np.empty(k), np.empty(k), np.empty(k)
    for j in range(k):
        i = src[j]
        bg = p[i] / m[i]
        bg2 = bg * bg
        beta2[j] = bg2 / (1 + bg2)
        gamma = math.sqrt(1 + bg2)
        r = ME / m[i]
        wmax[j] = 0.5 * (gamma - 1) * m[i] if ele[i] else 2 * ME * bg2 / (1 + 2 * gamma * r + r * r)
        t[j] = 1.0 / (1.0 / tm - rng.random() * (1.0 / tm - 1.0 / wmax[j]))
    ok = np.empty(k, np.bool_)
    for j in range(k):
        ok[j] = rng.random() < 1.0 - beta2[j] * t[j] / wmax[j]
    f = np.empty(k)
    for j in range(k):
        f[j] = rng.random()
    sel = np.nonzero(ok)[0]
    out = np.empty((len(sel), 6))  # vx vy vz px py pz
    for o in range(len(sel)):
        j = sel[o]
        i, fj = src[j], f[j]
        a = a0[i] + fj * da[i]
        out[o, 0], out[o, 1] = cx[i] + rho[i] * math.cos(a), cy[i] + rho[i] * math.sin(a)
        out[o, 2] = z0[i] + fj * s[i] * pz[i] / p[i]
        # the parent's direction there: the end direction rotated back by (1 - f) da
        back = (fj - 1) * da[i]
        cb, sb = math.cos(back), math.sin(back)
        ux, uy, uz = (px[i] * cb - py[i] * sb) / p[i], (px[i] * sb + py[i] * cb) / p[i], pz[i] / p[i]
        pe = math.sqrt(t[j] * (t[j] + 2 * ME))
        cos_t = _mn(_mx(t[j] / pe * (math.sqrt(p[i] ** 2 + m[i] ** 2) + ME) / p[i], -1.0), 1.0)
        sin_t = math.sqrt(1 - cos_t**2)
        phi = rng.uniform(0.0, TWO_PI)
        e1x, e1y, e1z, e2x, e2y, e2z = orthonormal(ux, uy, uz)
        ca, cb2 = sin_t * math.cos(phi), sin_t * math.sin(phi)
        out[o, 3] = (cos_t * ux + ca * e1x + cb2 * e2x) * pe
        out[o, 4] = (cos_t * uy + ca * e1y + cb2 * e2y) * pe
        out[o, 5] = (cos_t * uz + ca * e1z + cb2 * e2z) * pe
    return src[sel], out
