"""Compiled core of one charged-transport iteration (numba): helix, next surface, step length, layer crossings, advance, material.

It replaces ~300 numpy calls per iteration, whose fixed cost dominated the many iterations
with a few live particles (loopers) and whose memory passes dominated the wide ones. Random
numbers come from the caller's numpy Generator (numba shares its state and its algorithms) in
the order and number the numpy code drew them, so a seed gives the same events.
The formulas are those of the numpy transport it replaced (and of
:func:`fm4npp.sim.energy_loss.bethe`), operation for operation (no fastmath: LLVM may not
reorder or fuse them); only log/exp/atan2/acos/pow come from libm instead of numpy's SIMD
versions, which can differ in the last bit. `cache=True` keeps the machine code in __pycache__ for later processes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fm4npp.sim.secondaries import K_BETHE, ME

KB = 0.299792458e-2  # pT [GeV/c] = KB * B [T] * R [cm] * |q|
TWO_PI = 2 * np.pi
EPS_ARC = 1e-6  # cm: a crossing closer than this is the surface the particle sits on

LN10_2 = float(2 * np.log(10))  # numpy's value, as energy_loss.density_effect uses it
# columns of _Media.mat_tab
DENS, X0G, ZOA, IEV, STERN = 0, 1, 2, 3, 4

_jit = njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _mn(a, b):  # np.minimum: NaN wins
    return a if (a < b or a != a) else b


@_jit
def _mx(a, b):  # np.maximum: NaN wins
    return a if (a > b or a != a) else b


@_jit
def _mod2pi(a):  # float % is Python's (and numpy's) floor modulo, as np.mod
    return a % TWO_PI


@_jit
def _sign(v):
    return 1.0 if v > 0 else (-1.0 if v < 0 else v)


@_jit
def bethe(bg, mass, z2, mt, j, electron):
    """energy_loss.bethe (t_cut None) of one particle in material row j: (dE/dx, Wmax, beta^2)."""
    bg2 = bg * bg
    beta2 = bg2 / (1 + bg2)
    gamma = math.sqrt(1 + bg2)
    r = ME / mass
    wmax = 2 * ME * bg2 / (1 + 2 * gamma * r + r * r)
    if electron:
        wmax = 0.5 * (gamma - 1) * mass
    tup = wmax
    i = mt[j, IEV] * 1e-9
    c, x0, x1, a, k, d0 = mt[j, STERN], mt[j, STERN + 1], mt[j, STERN + 2], mt[j, STERN + 3], mt[j, STERN + 4], mt[j, STERN + 5]
    x = math.log10(_mx(bg, 1e-6))
    d = LN10_2 * x - c
    if x < x0:
        d = d0 * 10.0 ** (2 * (x - x0))
    elif x < x1:
        d += a * (x1 - x) ** k
    bracket = 0.5 * math.log(2 * ME * bg2 * tup / (i * i)) - 0.5 * beta2 * (1 + tup / wmax) - 0.5 * d
    return K_BETHE * z2 * mt[j, ZOA] / beta2 * _mx(bracket, 0.5), wmax, beta2


@_jit
def _effects(p, m, q2, ele, dedx, wmax, beta2, gram, mt, j, t_min, flags, hmin):
    """(mean energy loss, Highland theta^2, mean delta count above t_min) of crossing `gram`
    g/cm^2 of material j; electrons also lose E (1 - exp(-x/X0)) to bremsstrahlung."""
    x_x0 = gram / mt[j, X0G]
    de = th2 = nd = 0.0
    if flags[0]:
        e = math.sqrt(p * p + m * m)
        de = dedx * gram + ((e - m) * (1 - math.exp(-x_x0)) if ele else 0.0)
    if flags[1]:
        beta, z = math.sqrt(beta2), math.sqrt(q2)
        xl = _mx(x_x0, hmin)
        corr = _mx(1 + 0.038 * math.log(xl * z * z / (beta * beta)), 0.0)
        th = 0.0136 / (beta * p) * abs(z) * math.sqrt(x_x0) * corr
        th2 = th * th
    if flags[2] and wmax > t_min:
        nd = 0.5 * K_BETHE * q2 * mt[j, ZOA] * gram / beta2 * (1 / t_min - 1 / _mx(wmax, t_min))
    return de, th2, nd


@_jit
def step(x, y, z, px, py, pz, q, m, ele, lo, sdec, turns, ncross, kb, bsign, R, R2, LR, LR2, world_z,
         vt, mt, surf_cyl, ct, dt, flags, fp):
    """One iteration for every live particle. vt: volumes (r_min, r_max, z_half, material);
    mt: materials (density, X0, Z/A, I, Sternheimer x6); surf_cyl: cylinder of each surface;
    ct: cylinders (r, z_half, x0_fraction, material); dt: disks (z, r_min, r_max, x0_fraction,
    material); flags: energy_loss, multiple_scattering, delta_rays; fp: max_step_cm,
    max_eloss_fraction, highland_min_x0, delta_t_min_gev, delta_t_min_solid_gev.
    Updates turns and ncross in place; returns (per-particle float rows, int rows, bool rows,
    crossing floats, crossing ints)."""
    n = len(x)
    f = np.empty((24, n))  # p pt rho h cx cy a0 s ds_t da ekin dE th2 nd nds x y z px py sdec + scratch
    iv = np.empty((4, n), np.int64)  # bestk, lo, volume, first candidate layer
    cnt = np.zeros(n, np.int64)
    bv = np.empty((4, n), np.bool_)  # hit_surf, decayed, left_z, reach
    nR = len(R)
    for i in range(n):
        xi, yi, zi, pxi, pyi, pzi, mi = x[i], y[i], z[i], px[i], py[i], pz[i], m[i]
        q2 = q[i] * q[i]
        pt = math.hypot(pxi, pyi)
        p = math.sqrt(pt * pt + pzi * pzi)
        rho = pt / (kb * abs(q[i]))
        h = _sign(q[i]) * bsign
        cx = xi + h * rho * pyi / pt
        cy = yi - h * rho * pxi / pt
        d2 = cx * cx + cy * cy
        d = math.sqrt(d2)
        ac = math.atan2(cy, cx)
        a0 = math.atan2(yi - cy, xi - cx)
        inv = 1.0 / (2 * rho * d)
        rho2 = rho * rho
        best, bk, l = np.inf, -1, lo[i]
        for k in (max(l - 1, 0), l, min(l + 1, nR - 1)):
            kap = (R2[k] - d2 - rho2) * inv
            if abs(kap) <= 1:
                acs = math.acos(kap)
                for arg in (ac + acs - a0, ac - acs - a0):
                    arc = rho * _mod2pi(-h * arg)
                    if arc > EPS_ARC and arc < best:
                        best, bk = arc, k
        reach_mat = math.isfinite(best)
        rlo, rhi = abs(d - rho), d + rho
        ratio = p / pt
        s_surf = best * ratio
        half = 0.5 * best if reach_mat else 0.0
        amid = a0 - h * half / rho
        rmid = math.sqrt(_mx(d2 + rho * rho + 2 * rho * d * math.cos(amid - ac), 0.0))
        zmid = zi + half * pzi / pt
        s = _mn(_mn(_mn(s_surf, sdec[i]), fp[0]), TWO_PI * rho * ratio)
        ekin = math.sqrt(p * p + mi * mi) - mi
        vol, dedx, wmax, beta2 = -1, 0.0, 0.0, 0.0
        for j in range(vt.shape[0]):
            if rmid > vt[j, 0] and rmid < vt[j, 1] and abs(zmid) < vt[j, 2]:
                vol = j
                mj = int(vt[j, 3])
                dedx, wmax, beta2 = bethe(p / mi, mi, q2, mt, mj, ele[i])
                if flags[0]:
                    s = _mn(s, fp[1] * ekin / (dedx * mt[mj, DENS]))
                break  # volumes do not overlap (_Media checks)
        s_z = (_sign(pzi) * world_z - zi) * p / pzi if pzi != 0 else np.inf
        s = _mn(s, s_z)
        for j in range(dt.shape[0]):
            sd = (dt[j, 0] - zi) * p / pzi
            if sd > EPS_ARC and sd < s:
                s = sd
        hit = reach_mat and s == s_surf
        bv[0, i], bv[1, i], bv[2, i] = hit, s == sdec[i] and not hit, s == s_z
        bv[3, i] = reach_mat or np.searchsorted(LR, rhi) > np.searchsorted(LR, rlo)
        ds_t = s / ratio
        # measurement layers in the radial range the arc sweeps (end points, the circle's far/near point if passed)
        dang = ds_t / rho
        r0 = math.hypot(xi, yi)
        a_end = a0 - h * dang
        r1 = math.hypot(cx + rho * math.cos(a_end), cy + rho * math.sin(a_end))
        rmin_s = rlo if _mod2pi(-h * (ac + np.pi - a0)) <= dang else _mn(r0, r1)
        rmax_s = rhi if _mod2pi(-h * (ac - a0)) <= dang else _mx(r0, r1)
        l0 = np.searchsorted(LR, rmin_s - 1e-7)
        cnt[i] = np.searchsorted(LR, rmax_s + 1e-7) - l0
        da = -h * ds_t / rho
        a1 = a0 + da
        nx, ny, nz = cx + rho * math.cos(a1), cy + rho * math.sin(a1), zi + s * pzi / p
        cda, sda = math.cos(da), math.sin(da)
        npx, npy = pxi * cda - pyi * sda, pxi * sda + pyi * cda
        turns[i] += abs(da) / TWO_PI
        # material of the step: gas along it, a solid (cylinder, disk) at its end
        de = th2 = nd = nds = 0.0
        if vol >= 0:
            mj = int(vt[vol, 3])
            a_, b_, c_ = _effects(p, mi, q2, ele[i], dedx, wmax, beta2, s * mt[mj, DENS], mt, mj, fp[3], flags, fp[2])
            de += a_
            th2 += b_
            nd += c_
        kc = surf_cyl[bk] if hit else -1
        if kc >= 0 and abs(nz) <= ct[kc, 1]:
            mj = int(ct[kc, 3])
            cos_psi = abs(nx * npx + ny * npy) / (ct[kc, 0] * p)
            gram = ct[kc, 2] * mt[mj, X0G] / _mx(cos_psi, 0.05)
            dd, ww, bb = bethe(p / mi, mi, q2, mt, mj, ele[i])
            a_, b_, c_ = _effects(p, mi, q2, ele[i], dd, ww, bb, gram, mt, mj, fp[4], flags, fp[2])
            de += a_
            th2 += b_
            nds += c_
        for j in range(dt.shape[0]):
            if abs(nz - dt[j, 0]) < 1e-9:
                r_here = math.hypot(nx, ny)
                if r_here >= dt[j, 1] and r_here <= dt[j, 2]:
                    mj = int(dt[j, 4])
                    gram = dt[j, 3] * mt[mj, X0G] / _mx(abs(pzi) / p, 0.05)
                    dd, ww, bb = bethe(p / mi, mi, q2, mt, mj, ele[i])
                    a_, b_, c_ = _effects(p, mi, q2, ele[i], dd, ww, bb, gram, mt, mj, fp[4], flags, fp[2])
                    de += a_
                    th2 += b_
                    nds += c_
        vals = (p, pt, rho, h, cx, cy, a0, s, ds_t, da, ekin, de, th2, nd, nds, nx, ny, nz, npx, npy,
                sdec[i] - s, ac, d2, inv)
        for r in range(24):
            f[r, i] = vals[r]
        iv[0, i], iv[1, i], iv[2, i], iv[3, i] = bk, bk if hit else lo[i], vol, l0
    cf, ci, nout = _crossings(x, y, z, px, py, pz, q, m, LR2, f, iv, cnt, ncross)
    return f, iv, bv, cf[:, :nout], ci[:, :nout]


@_jit
def orthonormal(ux, uy, uz):
    """secondaries.orthonormal of one unit vector: e1 = u x z-hat (u x x-hat along the beam),
    e2 = u x e1, as six floats."""
    wx = 0.0 if abs(uz) < 0.99 else 1.0
    wz = 1.0 - wx
    e1x, e1y, e1z = uy * wz, uz * wx - ux * wz, -uy * wx
    nrm = math.sqrt(e1x * e1x + e1y * e1y + e1z * e1z)
    e1x, e1y, e1z = e1x / nrm, e1y / nrm, e1z / nrm
    return e1x, e1y, e1z, uy * e1z - uz * e1y, uz * e1x - ux * e1z, ux * e1y - uy * e1x


@_jit
def lose_and_scatter(px, py, pz, m, p, ekin, de, th2, t_stop, scatter, rng):
    """Momentum loss (p: momentum at the step start) and Highland scattering at the end of the
    step; returns (px, py, pz, stopped). The normals are drawn from `rng` (a numpy Generator,
    whose state numba shares) two per scattered particle in particle order, as the numpy
    version drew them, and the arithmetic is its own, so a seed gives the same events."""
    n = len(px)
    stopped = np.empty(n, np.bool_)
    ox, oy, oz = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        ekin_new = ekin[i] - de[i]
        stopped[i] = ekin_new < t_stop
        pnew = math.sqrt(_mx(ekin_new * (ekin_new + 2 * m[i]), 0.0))
        scale = 1.0 if stopped[i] else pnew / p[i]
        a, b, c = px[i] * scale, py[i] * scale, pz[i] * scale
        th = math.sqrt(th2[i])
        if scatter and th > 0 and not stopped[i]:
            ux, uy, uz = a / pnew, b / pnew, c / pnew
            e1x, e1y, e1z, e2x, e2y, e2z = orthonormal(ux, uy, uz)
            g0 = rng.standard_normal() * th
            g1 = rng.standard_normal() * th
            vx, vy, vz = ux + g0 * e1x + g1 * e2x, uy + g0 * e1y + g1 * e2y, uz + g0 * e1z + g1 * e2z
            k = pnew / math.sqrt(vx * vx + vy * vy + vz * vz)
            a, b, c = vx * k, vy * k, vz * k
        ox[i], oy[i], oz[i] = a, b, c
    return ox, oy, oz, stopped


@_jit
def _crossings(x, y, z, px, py, pz, q, m, LR2, f, iv, cnt, ncross):
    """Layer crossings within the step, in the order the numpy transport made them (so that the
    digitisation draws go to the same crossings): all '+acos' roots (particle, then layer
    ascending), then all '-acos' ones. Rows: x y z px py pz m q / layer, particle."""
    tot = 0
    for i in range(len(cnt)):
        tot += cnt[i]
    cf = np.empty((8, 2 * tot))
    ci = np.empty((2, 2 * tot), np.int64)
    nout = 0
    for sgn in (1.0, -1.0):
        for i in range(len(cnt)):
            pt, rho, h, cx, cy, a0, ds_t = f[1, i], f[2, i], f[3, i], f[4, i], f[5, i], f[6, i], f[8, i]
            ac, d2, inv = f[21, i], f[22, i], f[23, i]
            for ll in range(iv[3, i], iv[3, i] + cnt[i]):
                kap = (LR2[ll] - d2 - rho * rho) * inv
                if not abs(kap) <= 1:
                    continue
                arc = rho * _mod2pi(-h * (ac + sgn * math.acos(kap) - a0))
                # a layer on the surface the step ends at: its root may round past ds_t, and
                # the next step starts on it (arc < EPS_ARC), so it counts here
                if not (arc > EPS_ARC and arc <= ds_t + EPS_ARC):
                    continue
                dA = -h * arc / rho
                c, sn = math.cos(dA), math.sin(dA)
                a = a0 + dA
                vals = (cx + rho * math.cos(a), cy + rho * math.sin(a), z[i] + arc * pz[i] / pt,
                        px[i] * c - py[i] * sn, px[i] * sn + py[i] * c, pz[i], m[i], q[i])
                for r in range(8):
                    cf[r, nout] = vals[r]
                ci[0, nout], ci[1, nout] = ll, i
                ncross[i] += 1
                nout += 1
    return cf, ci, nout
