"""Secondaries of a charged step: delta electrons on the helix (sampled in :mod:`fm4npp.sim.emission_kernel`) and decays in flight (registered)."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import emission_kernel
from fm4npp.sim import secondaries as sec
from fm4npp.sim.particles import concat_particles, make_particles


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
    positions before the step), registered and appended to ``new``."""
    t_min = np.array([cfg.delta_t_min_gev, cfg.delta_t_min_solid_gev])
    srcs, outs = emission_kernel.deltas(np.stack([ndel, ndel_solid]), t_min, st["px"], st["py"], st["pz"], st["m"],
                                        st["ele"], g["p"], *start, g["cx"], g["cy"], g["rho"], g["a0"], da, s, rng)
    src = np.concatenate(srcs)
    if not len(src):
        return
    v = np.concatenate(outs)
    ev, n = st["ev"][src], len(src)
    vx, vy, vz, px, py, pz = (np.ascontiguousarray(v[:, k]) for k in range(6))
    pdg, q = np.full(n, 11), np.full(n, -1.0)
    tid = reg.add(ev, pdg, q, px, py, pz, vx, vy, vz, st["tid"][src], False)
    new.append(make_particles(ev, tid, pdg, q, np.full(n, sec.ME), vx, vy, vz, px, py, pz, st["gen"][src] + 1, rng, cfg))
