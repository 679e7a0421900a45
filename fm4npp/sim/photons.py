"""Photon transport: straight flight and e+e- conversion in material (P = 1 - exp(-7/9 x/X0))."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import TransportConfig
from fm4npp.sim.geometry import Detector
from fm4npp.sim.particles import concat_particles, make_particles

ME = sec.ME


def convert_photons(G: dict, det: Detector, cfg: TransportConfig, rng, reg: sec.TrackRegistry) -> dict:
    """Photons fly straight; each material crossing (cylinders, disks, gas path) converts it
    with P = 1 - exp(-7/9 x/X0); returns the e+e- pairs (registered, parent = photon)."""
    if not cfg.conversions:
        return concat_particles([])
    sel = (G["pdg"] == 22)
    e = np.sqrt(G["px"] ** 2 + G["py"] ** 2 + G["pz"] ** 2)
    sel &= e > 2.2 * ME
    g = {k: v[sel] for k, v in G.items()}
    e = e[sel]
    n = len(e)
    if not n:
        return concat_particles([])
    ux, uy, uz = g["px"] / e, g["py"] / e, g["pz"] / e
    x, y, z = g["x"], g["y"], g["z"]
    a = ux * ux + uy * uy
    b = 2 * (x * ux + y * uy)
    c0 = x * x + y * y
    cand_s, cand_p = [], []
    mats = {m.name: m for m in det.materials}

    def roots(radius):
        with np.errstate(divide="ignore", invalid="ignore"):
            disc = b * b - 4 * a * (c0 - radius * radius)
            sq = np.sqrt(np.where(disc > 0, disc, np.nan))
            return (-b - sq) / (2 * a), (-b + sq) / (2 * a)

    for cyl in det.cylinders:
        for s in roots(cyl.r):
            zz = z + s * uz
            ok = (s > 0) & (np.abs(zz) <= cyl.z_half)
            cos_psi = np.abs((x + s * ux) * ux + (y + s * uy) * uy) / cyl.r
            xx = cyl.x0_fraction / np.maximum(cos_psi, 0.05)
            cand_s.append(np.where(ok, s, np.inf))
            cand_p.append(np.where(ok, 1 - np.exp(-7 / 9 * xx), 0.0))
    for dsk in det.disks:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (dsk.z - z) / uz
            rr = np.hypot(x + s * ux, y + s * uy)
            ok = (s > 0) & (rr >= dsk.r_min) & (rr <= dsk.r_max)
            xx = dsk.x0_fraction / np.maximum(np.abs(uz), 0.05)
        cand_s.append(np.where(ok, s, np.inf))
        cand_p.append(np.where(ok, 1 - np.exp(-7 / 9 * xx), 0.0))
    for v in det.volumes:
        with np.errstate(invalid="ignore", divide="ignore"):
            s_in = np.nan_to_num(roots(v.r_min)[1], nan=0.0)
            s_in = np.maximum(s_in, 0.0)
            s_out = np.nan_to_num(roots(v.r_max)[1], nan=0.0)
            s_zend = np.where(uz != 0, (np.sign(uz) * v.z_half - z) / uz, np.inf)
        s_out = np.minimum(s_out, s_zend)
        length = np.maximum(s_out - s_in, 0.0)
        xx = length / mats[v.material].x0_cm
        cand_s.append(s_in + rng.random(n) * length)
        cand_p.append(np.where(length > 0, 1 - np.exp(-7 / 9 * xx), 0.0))
    S = np.stack(cand_s, 1)
    Pc = np.stack(cand_p, 1)
    conv = rng.random(S.shape) < Pc
    S = np.where(conv, S, np.inf)
    first = np.argmin(S, axis=1)
    s_conv = S[np.arange(n), first]
    idx = np.nonzero(np.isfinite(s_conv))[0]
    if not len(idx):
        return concat_particles([])
    sc = s_conv[idx]
    vx, vy, vz = x[idx] + sc * ux[idx], y[idx] + sc * uy[idx], z[idx] + sc * uz[idx]
    e_minus, e_plus = sec.pair_energies(e[idx], rng)
    out = []
    ev = g["ev"][idx]
    for code, ee in ((11, e_minus), (-11, e_plus)):
        pe = np.sqrt(np.maximum(ee * ee - ME * ME, 0))
        mom = np.stack([ux[idx], uy[idx], uz[idx]], 1) * pe[:, None]
        pdg = np.full(len(idx), code)
        q = np.full(len(idx), -1.0 if code == 11 else 1.0)
        tid = reg.add(ev, pdg, q, mom[:, 0], mom[:, 1], mom[:, 2], vx, vy, vz, g["tid"][idx], False)
        out.append(make_particles(ev, tid, pdg, q, np.full(len(idx), ME), vx, vy, vz, mom[:, 0], mom[:, 1],
                                  mom[:, 2], g["gen"][idx] + 1, rng, cfg))
    return concat_particles(out)
