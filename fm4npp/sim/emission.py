"""Secondaries of a charged step: delta electrons on the helix and decays in flight (registered)."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import secondaries as sec
from fm4npp.sim.particles import concat_particles, make_particles


def _make_deltas(st, nd, t_min, x0, y0, z0, cx, cy, rho, a0, da, s, pz, p, cfg, rng, reg):
    src = np.repeat(np.arange(len(nd)), nd)
    m = st["m"][src]
    p_par = p[src]  # momentum at the start of the step
    bg = p_par / m
    bg2 = bg * bg
    beta2 = bg2 / (1 + bg2)
    gamma = np.sqrt(1 + bg2)
    r = sec.ME / m
    wmax = np.where(st["ele"][src], 0.5 * (gamma - 1) * m, 2 * sec.ME * bg2 / (1 + 2 * gamma * r + r * r))
    t, ok = sec.sample_delta_t(t_min, wmax, beta2, rng)
    f = rng.random(len(src))
    src, t, f, p_par, m = src[ok], t[ok], f[ok], p_par[ok], m[ok]
    if not len(src):
        return concat_particles([])
    a = a0[src] + f * da[src]
    vx = cx[src] + rho[src] * np.cos(a)
    vy = cy[src] + rho[src] * np.sin(a)
    vz = z0[src] + f * s[src] * pz[src] / p[src]
    # parent direction at that point: the start direction rotated by f * da
    pxs, pys = st["px"][src], st["py"][src]  # already rotated to the step end
    back = (f - 1) * da[src]
    c, sn = np.cos(back), np.sin(back)
    ux, uy = (pxs * c - pys * sn) / p_par, (pxs * sn + pys * c) / p_par
    uz = st["pz"][src] / p_par
    pe, d = sec.delta_direction(t, p_par, np.sqrt(p_par**2 + m**2), ux, uy, uz, rng)
    ev = st["ev"][src]
    pdg = np.full(len(src), 11)
    q = np.full(len(src), -1.0)
    mom = d * pe[:, None]
    tid = reg.add(ev, pdg, q, mom[:, 0], mom[:, 1], mom[:, 2], vx, vy, vz, st["tid"][src], False)
    return make_particles(ev, tid, pdg, q, np.full(len(src), sec.ME), vx, vy, vz, mom[:, 0], mom[:, 1], mom[:, 2],
                          st["gen"][src] + 1, rng, cfg)


def _decay(st, idx, cfg, rng, reg):
    out = []
    apdg = np.abs(st["pdg"][idx])
    for sel, (d1, d2) in sec.choose_channels(apdg, rng):
        j = idx[sel]
        sign = np.sign(st["pdg"][j])
        p3 = np.stack([st["px"][j], st["py"][j], st["pz"][j]], 1)
        m1 = np.full(len(j), sec.MASS[abs(d1)])
        m2 = np.full(len(j), sec.MASS[abs(d2)])
        k1, k2 = sec.two_body(p3, st["m"][j], m1, m2, rng)
        for code, mom, mm in ((d1, k1, m1), (d2, k2, m2)):
            if abs(code) in (12, 14):  # neutrinos leave no trace
                continue
            pdg = (code * sign).astype(np.int64)
            q = sec.charge_of(pdg)
            ev = st["ev"][j]
            vx, vy, vz = st["x"][j], st["y"][j], st["z"][j]
            tid = reg.add(ev, pdg, q, mom[:, 0], mom[:, 1], mom[:, 2], vx, vy, vz, st["tid"][j], False)
            if abs(code) == 111:  # pi0 -> gamma gamma at once
                g1, g2 = sec.two_body(mom, mm, np.zeros(len(j)), np.zeros(len(j)), rng)
                for g in (g1, g2):
                    gt = reg.add(ev, np.full(len(j), 22), np.zeros(len(j)), g[:, 0], g[:, 1], g[:, 2], vx, vy, vz, tid, False)
                    out.append(make_particles(ev, gt, np.full(len(j), 22), np.zeros(len(j)), np.zeros(len(j)),
                                              vx, vy, vz, g[:, 0], g[:, 1], g[:, 2], st["gen"][j] + 1, rng, cfg))
                continue
            out.append(make_particles(ev, tid, pdg, q, mm, vx, vy, vz, mom[:, 0], mom[:, 1], mom[:, 2],
                                      st["gen"][j] + 1, rng, cfg))
    return concat_particles(out)


def emit_deltas(st: dict, g: dict, start, da, s, ndel, ndel_solid, cfg, rng, reg, new: list) -> None:
    """Delta electrons, produced at a random point of the step on the helix (``start``: the
    positions before the step), appended to ``new``."""
    n = len(st["ev"])
    x0_, y0_, z0_ = start
    for mean, t_min in ((ndel, cfg.delta_t_min_gev), (ndel_solid, cfg.delta_t_min_solid_gev)):
        # Poisson(0) draws no random number: sampling the non-zero means alone is the same
        nz = np.nonzero(mean)[0]
        nd = np.zeros(n, np.int64)
        nd[nz] = rng.poisson(mean[nz])
        if nd.any():
            new.append(_make_deltas(st, nd, t_min, x0_, y0_, z0_, g["cx"], g["cy"], g["rho"], g["a0"], da, s,
                                    st["pz"], g["p"], cfg, rng, reg))
