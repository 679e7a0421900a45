"""Photon transport of the "extended" physics list: pair production, Compton scattering and photo-absorption in material."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import photon_xsec as xs
from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import TransportConfig
from fm4npp.sim.geometry import Detector
from fm4npp.sim.particles import concat_particles, make_particles

ME = sec.ME
EPS_S = 1e-6  # cm: a crossing closer than this is the surface the photon sits on


def _line_circle(x, y, ux, uy, radius):
    """Path lengths (s-, s+) where the straight lines meet the cylinder of `radius` (NaN if not)."""
    a = ux * ux + uy * uy
    b = 2 * (x * ux + y * uy)
    c = x * x + y * y - radius * radius
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = b * b - 4 * a * c
        sq = np.sqrt(np.where(disc > 0, disc, np.nan))
        return (-b - sq) / (2 * a), (-b + sq) / (2 * a)


def _segments(g, u, v):
    """The (up to two) path intervals [a, b] of each photon inside the annular gas volume v."""
    x, y, z = g["x"], g["y"], g["z"]
    ux, uy, uz = u
    o_lo, o_hi = _line_circle(x, y, ux, uy, v.r_max)
    i_lo, i_hi = _line_circle(x, y, ux, uy, v.r_min)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_a = np.where(uz != 0, (-np.sign(uz) * v.z_half - z) / uz, -np.inf)
        z_b = np.where(uz != 0, (np.sign(uz) * v.z_half - z) / uz, np.where(np.abs(z) < v.z_half, np.inf, -np.inf))
    lo = np.maximum(np.nan_to_num(o_lo, nan=np.inf), 0.0)
    lo = np.maximum(lo, z_a)
    hi = np.minimum(np.nan_to_num(o_hi, nan=-np.inf), z_b)
    inner = np.isfinite(i_lo)
    i_lo, i_hi = np.where(inner, i_lo, hi), np.where(inner, i_hi, hi)
    out = []
    for a, b in ((lo, np.minimum(hi, i_lo)), (np.maximum(lo, i_hi), hi)):
        out.append((a, np.maximum(b, a)))
    return out


def _candidates(g, e, u, det: Detector, mats):
    """(s of the interaction if it happens here, grammage [g/cm^2], material name, is-volume,
    segment start) per material crossing of every photon."""
    x, y, z = g["x"], g["y"], g["z"]
    ux, uy, uz = u
    cands = []
    for cyl in det.cylinders:
        for s in _line_circle(x, y, ux, uy, cyl.r):
            with np.errstate(invalid="ignore"):
                zz = z + s * uz
                ok = (s > EPS_S) & (np.abs(zz) <= cyl.z_half)
            cos_psi = np.abs((x + s * ux) * ux + (y + s * uy) * uy) / cyl.r
            gram = cyl.x0_fraction * mats[cyl.material].x0_g_cm2 / np.maximum(cos_psi, 0.05)
            cands.append((np.where(ok, s, np.inf), np.where(ok, gram, 0.0), cyl.material, False))
    for dsk in det.disks:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (dsk.z - z) / uz
            rr = np.hypot(x + s * ux, y + s * uy)
            ok = (s > EPS_S) & (rr >= dsk.r_min) & (rr <= dsk.r_max)
        gram = dsk.x0_fraction * mats[dsk.material].x0_g_cm2 / np.maximum(np.abs(uz), 0.05)
        cands.append((np.where(ok, s, np.inf), np.where(ok, gram, 0.0), dsk.material, False))
    for v in det.volumes:
        rho = mats[v.material].density_g_cm3
        for a, b in _segments(g, u, v):
            inside = b > a
            with np.errstate(invalid="ignore"):  # inf - inf where the line misses the volume
                cands.append((np.where(inside, a, np.inf), np.where(inside, b - a, 0.0) * rho, v.material, True))
    return cands


def interact_photons(G: dict, det: Detector, cfg: TransportConfig, rng, reg: sec.TrackRegistry) -> dict:
    """Photons fly straight; at each material crossing they interact with probability
    1 - exp(-mu x), mu = pair + Compton + photo (per gram, :mod:`fm4npp.sim.photon_xsec`); the
    first interaction is chosen in path order, the process by its share of mu. Returns the
    secondaries (registered, parent = photon): e+e- pairs, Compton electrons with the
    scattered photon (transported in the next generation), photo-electrons (T = E_gamma, the
    binding energy and the fluorescence/Auger emission neglected)."""
    sel = G["pdg"] == 22
    e = np.sqrt(G["px"] ** 2 + G["py"] ** 2 + G["pz"] ** 2)
    # softer photons make electrons that stop within a few mm of gas: absorbed in place
    sel &= e > cfg.delta_t_min_gev
    g = {k: v[sel] for k, v in G.items()}
    e = e[sel]
    n = len(e)
    if not n:
        return concat_particles([])
    u = (g["px"] / e, g["py"] / e, g["pz"] / e)
    mats = {m.name: m for m in det.materials}
    best_s = np.full(n, np.inf)
    best_w = np.zeros((n, 3))
    for s0, gram, mname, vol in _candidates(g, e, u, det, mats):
        mat = mats[mname]
        mp, mc, mf, mt = xs.mu_total(e, mat)
        if not cfg.conversions:
            mt, mp = mt - mp, np.zeros(n)
        prob = -np.expm1(-mt * gram)
        r = rng.random(n)
        hit = (r < prob) & np.isfinite(s0)
        if vol:  # exponential depth within the segment, given an interaction in it
            with np.errstate(divide="ignore", invalid="ignore"):
                depth = -np.log1p(-r * np.where(prob > 0, 1.0, 0.0)) / (mt * mat.density_g_cm3)
            s = s0 + np.where(hit, depth, 0.0)
        else:
            s = s0
        take = hit & (s < best_s)
        best_s = np.where(take, s, best_s)
        w = np.stack([mp, mc, mf], 1) / np.where(mt > 0, mt, 1.0)[:, None]
        best_w = np.where(take[:, None], w, best_w)
    idx = np.nonzero(np.isfinite(best_s))[0]
    if not len(idx):
        return concat_particles([])
    sc = best_s[idx]
    ux, uy, uz = (c[idx] for c in u)
    pos = (g["x"][idx] + sc * ux, g["y"][idx] + sc * uy, g["z"][idx] + sc * uz)
    cum = np.cumsum(best_w[idx], 1)
    r = rng.random(len(idx)) * cum[:, 2]
    proc = (r > cum[:, 0]).astype(int) + (r > cum[:, 1])
    sub = dict(ev=g["ev"][idx], tid=g["tid"][idx], gen=g["gen"][idx], e=e[idx], u=(ux, uy, uz), pos=pos)
    out = []
    for code, fn in ((0, _pair), (1, _compton), (2, _photo)):
        j = np.nonzero(proc == code)[0]
        if len(j):
            out.extend(fn({k: (tuple(c[j] for c in v) if isinstance(v, tuple) else v[j]) for k, v in sub.items()},
                          cfg, rng, reg))
    return concat_particles(out)


def _emit(s, code, q, mass, mom, cfg, rng, reg):
    n = len(s["ev"])
    pdg = np.full(n, code)
    qq = np.full(n, q)
    x, y, z = s["pos"]
    tid = reg.add(s["ev"], pdg, qq, mom[:, 0], mom[:, 1], mom[:, 2], x, y, z, s["tid"], False)
    return make_particles(s["ev"], tid, pdg, qq, np.full(n, mass), x.copy(), y.copy(), z.copy(),
                          mom[:, 0].copy(), mom[:, 1].copy(), mom[:, 2].copy(), s["gen"] + 1, rng, cfg)


def _pair(s, cfg, rng, reg):
    """e+e- along the photon, electron energy fraction uniform (as the baseline conversions)."""
    e_minus, e_plus = sec.pair_energies(s["e"], rng)
    d = np.stack(s["u"], 1)
    out = []
    for code, ee in ((11, e_minus), (-11, e_plus)):
        pe = np.sqrt(np.maximum(ee * ee - ME * ME, 0))
        out.append(_emit(s, code, -1.0 if code == 11 else 1.0, ME, d * pe[:, None], cfg, rng, reg))
    return out


def _compton(s, cfg, rng, reg):
    """Klein-Nishina scattering: the electron gets E (1 - eps) and p_gamma - p_gamma'."""
    eps, cos_t = xs.sample_compton(s["e"], rng)
    d = xs.rotate(cos_t, *s["u"], rng)
    k_in = np.stack(s["u"], 1) * s["e"][:, None]
    k_out = d * (eps * s["e"])[:, None]
    return [_emit(s, 11, -1.0, ME, k_in - k_out, cfg, rng, reg), _emit(s, 22, 0.0, 0.0, k_out, cfg, rng, reg)]


def _photo(s, cfg, rng, reg):
    t = s["e"]
    d = xs.rotate(xs.photoelectron_cos(t, rng), *s["u"], rng)
    pe = np.sqrt(t * (t + 2 * ME))
    return [_emit(s, 11, -1.0, ME, d * pe[:, None], cfg, rng, reg)]
