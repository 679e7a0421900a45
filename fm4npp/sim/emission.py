"""Secondaries of a charged step, registered: delta electrons (sampled in :mod:`fm4npp.sim.emission_kernel`) and decays in flight."""

from __future__ import annotations

import numpy as np

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


def register_deltas(st: dict, src, rows, cfg, rng, reg, new: list) -> None:
    """Register the delta electrons of :func:`fm4npp.sim.emission_kernel.after_step` (parents
    `src` in `st`; rows vx, vy, vz, px, py, pz) and append them to ``new``."""
    if not len(src):
        return
    ev, n = st["ev"][src], len(src)
    vx, vy, vz, px, py, pz = (np.ascontiguousarray(rows[:, k]) for k in range(6))
    pdg, q = np.full(n, 11), np.full(n, -1.0)
    tid = reg.add(ev, pdg, q, px, py, pz, vx, vy, vz, st["tid"][src], False)
    new.append(make_particles(ev, tid, pdg, q, np.full(n, sec.ME), vx, vy, vz, px, py, pz, st["gen"][src] + 1, rng, cfg))
