"""The field step: helix geometry in uniform Bz, the next surface, measurement-layer crossings, advancing."""

from __future__ import annotations

import numpy as np

KB = 0.299792458e-2  # pT [GeV/c] = KB * B [T] * R [cm] * |q|
TWO_PI = 2 * np.pi
EPS_ARC = 1e-6  # cm: a crossing closer than this is the surface the particle sits on


def helix(st: dict, kb: float, bsign: float) -> dict:
    """Transverse circle of every live particle (sets st["p"]): pt, p, radius rho, sense h,
    centre (cx, cy), its distance d (and d2) from the axis, its angle ac, the particle's angle a0."""
    x, y, px, py, pz = st["x"], st["y"], st["px"], st["py"], st["pz"]
    pt = np.hypot(px, py)
    p = np.sqrt(pt * pt + pz * pz)
    st["p"] = p
    rho = pt / (kb * np.abs(st["q"]))
    h = np.sign(st["q"]) * bsign  # +1: clockwise seen from +z
    cx = x + h * rho * py / pt
    cy = y - h * rho * px / pt
    d2 = cx * cx + cy * cy
    d = np.sqrt(d2)
    ac = np.arctan2(cy, cx)
    a0 = np.arctan2(y - cy, x - cx)
    return dict(pt=pt, p=p, rho=rho, h=h, cx=cx, cy=cy, d2=d2, d=d, ac=ac, a0=a0)


def next_surface(st: dict, g: dict, M) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next material/boundary cylinder among the three around the particle: (transverse arc
    to it, inf if none; its surface index; 1 / (2 rho d), reused for the layer crossings)."""
    n = len(st["ev"])
    rho, h, ac, a0, d2, d = g["rho"], g["h"], g["ac"], g["a0"], g["d2"], g["d"]
    best = np.full(n, np.inf)
    bestk = np.full(n, -1, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / (2 * rho * d)
        rho2 = rho * rho
        lo = st["lo"]
        for k in (np.maximum(lo - 1, 0), lo, np.minimum(lo + 1, len(M.r) - 1)):
            kap = (M.r2[k] - d2 - rho2) * inv
            # only the particles whose circle meets this surface (often few)
            ok = np.nonzero(np.abs(kap) <= 1)[0]
            if not len(ok):
                continue
            acs = np.arccos(kap[ok])
            rho_o, mh_o, ac_o, a0_o = rho[ok], -h[ok], ac[ok], a0[ok]
            for sgn in (1.0, -1.0):
                arc = rho_o * np.mod(mh_o * (ac_o + sgn * acs - a0_o), TWO_PI)
                good = (arc > EPS_ARC) & (arc < best[ok])
                gi = ok[good]
                best[gi] = arc[good]
                bestk[gi] = k[gi]
    return best, bestk, inv


def layer_crossings(st: dict, g: dict, M, ds_t, inv, rlo, rhi, crossings: list) -> None:
    """Append the measurement-layer crossings within (0, ds_t] to ``crossings`` (and count them
    in st["ncross"]): candidates are the layers inside the radial range the arc sweeps (end
    points, plus the circle's far/near point if passed)."""
    n = len(st["ev"])
    LR, LR2 = M.layer_r, M.layer_r2
    x, y, z, px, py, pz = st["x"], st["y"], st["z"], st["px"], st["py"], st["pz"]
    m = st["m"]
    pt, rho, h, cx, cy, d2, ac, a0 = g["pt"], g["rho"], g["h"], g["cx"], g["cy"], g["d2"], g["ac"], g["a0"]
    dang = ds_t / rho
    r0 = np.hypot(x, y)
    a_end = a0 - h * dang
    r1 = np.hypot(cx + rho * np.cos(a_end), cy + rho * np.sin(a_end))
    rmin_s = np.where(np.mod(-h * (ac + np.pi - a0), TWO_PI) <= dang, rlo, np.minimum(r0, r1))
    rmax_s = np.where(np.mod(-h * (ac - a0), TWO_PI) <= dang, rhi, np.maximum(r0, r1))
    l0 = np.searchsorted(LR, rmin_s - 1e-7)
    cnt = np.searchsorted(LR, rmax_s + 1e-7) - l0
    tot = int(cnt.sum())
    if tot:
        ii = np.repeat(np.arange(n), cnt)
        ll = l0[ii] + np.arange(tot) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        with np.errstate(divide="ignore", invalid="ignore"):
            kap = (LR2[ll] - d2[ii] - rho[ii] ** 2) * inv[ii]
        ok = np.nonzero(np.abs(kap) <= 1)[0]
        ii, ll = ii[ok], ll[ok]
        acs = np.arccos(kap[ok])
        hi_, rho_i, a0_i, ac_i = h[ii], rho[ii], a0[ii], ac[ii]
        for sgn in (1.0, -1.0):
            arc = rho_i * np.mod(-hi_ * (ac_i + sgn * acs - a0_i), TWO_PI)
            sel = np.nonzero((arc > EPS_ARC) & (arc <= ds_t[ii]))[0]
            if not len(sel):
                continue
            i = ii[sel]
            dA = -h[i] * arc[sel] / rho[i]
            c, sn = np.cos(dA), np.sin(dA)
            a = a0[i] + dA
            crossings.append(dict(
                ev=st["ev"][i], tid=st["tid"][i], layer=ll[sel], x=cx[i] + rho[i] * np.cos(a),
                y=cy[i] + rho[i] * np.sin(a), z=z[i] + arc[sel] * pz[i] / pt[i],
                px=px[i] * c - py[i] * sn, py=px[i] * sn + py[i] * c, pz=pz[i], m=m[i], q=st["q"][i]))
            st["ncross"] += np.bincount(i, minlength=n)


def advance(st: dict, g: dict, s, ds_t, hit_surf, bestk) -> np.ndarray:
    """Move every particle along its helix by path s (transverse ds_t), updating position,
    momentum direction, turns, remaining decay path and surface index; returns the angle da."""
    x, y, z, px, py, pz = st["x"], st["y"], st["z"], st["px"], st["py"], st["pz"]
    p, rho, h, cx, cy, a0 = g["p"], g["rho"], g["h"], g["cx"], g["cy"], g["a0"]
    da = -h * ds_t / rho
    a1 = a0 + da
    x = cx + rho * np.cos(a1)
    y = cy + rho * np.sin(a1)
    z = z + s * pz / p
    cda, sda = np.cos(da), np.sin(da)
    px, py = px * cda - py * sda, px * sda + py * cda
    st["turns"] += np.abs(da) / TWO_PI
    st["sdec"] = st["sdec"] - s
    st["lo"] = np.where(hit_surf, bestk, st["lo"])
    st["x"], st["y"], st["z"], st["px"], st["py"], st["pz"] = x, y, z, px, py, pz
    return da
