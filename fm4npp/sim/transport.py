"""Vectorised transport of particles through a :class:`~fm4npp.sim.geometry.Detector`.

Charged particles move on helices in the uniform field Bz. Each iteration advances *every*
live particle at once to its next event: the next cylindrical surface it crosses (found
analytically from its transverse circle among the three surfaces around it), a decay in
flight, a medium step limit, a disk (central membrane) or the end of the world. Loopers simply
take many iterations (capped in turns). On the way: Bethe mean energy loss with the density
effect (momentum loss along the path), Highland multiple scattering in gas steps and on
material crossings, delta electrons with the 1/T^2 spectrum, pi/K decays in flight.
Photons fly straight and convert into e+e- in material (P = 1 - exp(-7/9 x/X0)).
Secondaries are returned and transported by the caller in the next generation.
Units: cm, GeV, GeV/c, tesla.
"""

from __future__ import annotations

import numpy as np

from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import TransportConfig
from fm4npp.sim.geometry import Detector, Material

KB = 0.299792458e-2  # pT [GeV/c] = KB * B [T] * R [cm] * |q|
K_BETHE = 0.307075e-3  # GeV cm^2/mol
ME = sec.ME
TWO_PI = 2 * np.pi
EPS_ARC = 1e-6  # cm: a crossing closer than this is the surface the particle sits on

PARTICLE_FIELDS = ("ev", "tid", "pdg", "q", "m", "x", "y", "z", "px", "py", "pz", "sdec", "gen")


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


def highland(p, beta, x_x0, z, min_x0):
    """Highland RMS plane angle [rad] for material thickness x_x0 (radiation lengths)."""
    xl = np.maximum(x_x0, min_x0)
    corr = np.maximum(1 + 0.038 * np.log(xl * z * z / (beta * beta)), 0.0)
    return 0.0136 / (beta * p) * np.abs(z) * np.sqrt(x_x0) * corr


def _empty_particles() -> dict:
    return {k: np.zeros(0, dtype=np.int64 if k in ("ev", "tid", "pdg", "gen") else float) for k in PARTICLE_FIELDS}


def concat_particles(parts: list[dict]) -> dict:
    parts = [p for p in parts if len(p["ev"])]
    if not parts:
        return _empty_particles()
    return {k: np.concatenate([p[k] for p in parts]) for k in PARTICLE_FIELDS}


def decay_length(pdg, p, m, rng, cfg: TransportConfig) -> np.ndarray:
    """Remaining path to a decay in flight [cm] (inf for particles we do not decay)."""
    out = np.full(len(pdg), np.inf)
    if not cfg.decays_in_flight:
        return out
    a = np.abs(pdg)
    for code, ctau in sec.CTAU_CM.items():
        sel = a == code
        if sel.any():
            out[sel] = -np.log(1.0 - rng.random(sel.sum())) * p[sel] / m[sel] * ctau
    return out


def make_particles(ev, tid, pdg, q, m, x, y, z, px, py, pz, gen, rng, cfg) -> dict:
    p = np.sqrt(px**2 + py**2 + pz**2)
    return dict(ev=np.asarray(ev, np.int64), tid=np.asarray(tid, np.int64), pdg=np.asarray(pdg, np.int64),
                q=np.asarray(q, float), m=np.asarray(m, float), x=x, y=y, z=z, px=px, py=py, pz=pz,
                sdec=decay_length(pdg, p, m, rng, cfg), gen=np.full(len(ev), gen, np.int64))


class _Media:
    """Detector lookups in array form (built once per detector)."""

    def __init__(self, det: Detector):
        s = det.surfaces
        self.r = s["r"]
        self.r2 = np.where(np.isfinite(self.r) & (self.r > 0), self.r**2, np.inf)
        self.r2[0] = -1.0  # unreachable sentinel below the innermost surface
        self.layer_r = det.layer_radii
        self.layer_r2 = det.layer_radii ** 2
        self.cyl = s["cylinder"]
        self.world = s["world"]
        self.mats = {m.name: m for m in det.materials}
        self.cyls = det.cylinders
        self.disks = det.disks
        self.volumes = det.volumes
        self.b = det.b_field_t
        self.world_z = det.world_z


def _material_effects(st, sub, mat: Material, grammage, cfg: TransportConfig, dE, th2, ndel, t_min, pre=None):
    """Add mean energy loss, scattering variance and delta counts (above t_min) for crossing
    `grammage` [g/cm^2] of `mat` (per particle of index array `sub`); `pre` = bethe() output."""
    p = st["p"][sub]
    m = st["m"][sub]
    q2 = st["q"][sub] ** 2
    ele = st["ele"][sub]
    dedx, wmax, beta2 = pre if pre is not None else bethe(p / m, m, q2, mat, electron=ele)
    x_x0 = grammage / mat.x0_g_cm2
    if cfg.energy_loss:
        e = np.sqrt(p * p + m * m)
        dE[sub] += dedx * grammage + np.where(ele, (e - m) * (1 - np.exp(-x_x0)), 0.0)
    if cfg.multiple_scattering:
        th2[sub] += highland(p, np.sqrt(beta2), x_x0, np.sqrt(q2), cfg.highland_min_x0) ** 2
    if cfg.delta_rays:
        ndel[sub] += sec.delta_mean_count(beta2, wmax, q2, mat.z_over_a, grammage, t_min)


def propagate_charged(P: dict, det: Detector, cfg: TransportConfig, rng, reg: sec.TrackRegistry, media=None):
    """Transport charged particles P (dict of PARTICLE_FIELDS arrays) until they stop, leave,
    decay or exceed the turn cap.

    One iteration moves every live particle along its helix to the first of: the next material
    or boundary cylinder (3 analytic candidates around it), max_step, its decay point, the
    energy-loss step limit, at most one turn, the central-membrane disk, the end of the world.
    All measurement-layer crossings inside that arc are found at once (particles x layers).

    Returns (crossings, secondaries): crossings is a dict of arrays, one row per measurement-
    layer crossing (ev, tid, layer, x, y, z, px, py, pz, m, q); secondaries a particle dict
    (charged and photons) registered in `reg`.
    """
    M = media or _Media(det)
    keep = (P["q"] != 0) & (np.hypot(P["px"], P["py"]) > 1e-5)
    st = {k: np.array(v[keep]) for k, v in P.items()}
    st["lo"] = np.searchsorted(M.r, np.hypot(st["x"], st["y"]), side="right") - 1
    n = len(st["ev"])
    st["turns"] = np.zeros(n)
    st["ncross"] = np.zeros(n, np.int64)
    st["ele"] = np.abs(st["pdg"]) == 11
    kb = KB * abs(M.b)
    bsign = 1.0 if M.b >= 0 else -1.0
    LR, LR2 = M.layer_r, M.layer_r2
    crossings = []
    new = []
    it = 0
    while len(st["ev"]) and it < 10 * cfg.max_crossings:
        it += 1
        n = len(st["ev"])
        x, y, z, px, py, pz = st["x"], st["y"], st["z"], st["px"], st["py"], st["pz"]
        pt = np.hypot(px, py)
        p = np.sqrt(pt * pt + pz * pz)
        st["p"] = p
        m = st["m"]
        rho = pt / (kb * np.abs(st["q"]))
        h = np.sign(st["q"]) * bsign  # +1: clockwise seen from +z
        cx = x + h * rho * py / pt
        cy = y - h * rho * px / pt
        d2 = cx * cx + cy * cy
        d = np.sqrt(d2)
        ac = np.arctan2(cy, cx)
        a0 = np.arctan2(y - cy, x - cx)
        # next material/boundary cylinder among the three around the particle
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
        reach_mat = np.isfinite(best)
        # a particle that can reach neither a material surface nor a layer is done
        rlo, rhi = np.abs(d - rho), d + rho
        reach = reach_mat | (np.searchsorted(LR, rhi) > np.searchsorted(LR, rlo))
        ratio = p / pt  # 3D path per transverse path
        s_surf = best * ratio
        # medium of this step: region around the midpoint of the arc to the next material
        # surface (homogeneous: measurement layers are not material)
        half = np.where(reach_mat, 0.5 * best, 0.0)
        amid = a0 - h * half / rho
        rmid = np.sqrt(np.maximum(d2 + rho * rho + 2 * rho * d * np.cos(amid - ac), 0))
        zmid = z + half * pz / pt
        s = np.minimum(s_surf, st["sdec"])
        s = np.minimum(s, cfg.max_step_cm)
        s = np.minimum(s, TWO_PI * rho * ratio)  # at most one turn: each layer crossed <= 2x
        ekin = np.sqrt(p * p + m * m) - m
        vols = []
        for j, v in enumerate(M.volumes):
            sub = np.nonzero((rmid > v.r_min) & (rmid < v.r_max) & (np.abs(zmid) < v.z_half))[0]
            if len(sub):
                mat = M.mats[v.material]
                pre = bethe(p[sub] / m[sub], m[sub], st["q"][sub] ** 2, mat, electron=st["ele"][sub])
                if cfg.energy_loss:
                    s[sub] = np.minimum(s[sub], cfg.max_eloss_fraction * ekin[sub] / (pre[0] * mat.density_g_cm3))
                vols.append((sub, mat, pre))
        with np.errstate(divide="ignore", invalid="ignore"):
            s_z = np.where(pz != 0, (np.sign(pz) * M.world_z - z) * p / pz, np.inf)
            s = np.minimum(s, s_z)
            for dsk in M.disks:
                sd = (dsk.z - z) * p / pz
                s = np.where((sd > EPS_ARC) & (sd < s), sd, s)
        hit_surf = reach_mat & (s == s_surf)
        decayed = (s == st["sdec"]) & ~hit_surf
        left_z = s == s_z
        ds_t = s / ratio
        # measurement-layer crossings within (0, ds_t]: candidates are the layers inside the
        # radial range the arc sweeps (end points, plus the circle's far/near point if passed)
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
        # advance along the helix
        da = -h * ds_t / rho
        a1 = a0 + da
        x0_, y0_, z0_ = x, y, z
        x = cx + rho * np.cos(a1)
        y = cy + rho * np.sin(a1)
        z = z + s * pz / p
        cda, sda = np.cos(da), np.sin(da)
        px, py = px * cda - py * sda, px * sda + py * cda
        st["turns"] += np.abs(da) / TWO_PI
        st["sdec"] = st["sdec"] - s
        st["lo"] = np.where(hit_surf, bestk, st["lo"])
        st["x"], st["y"], st["z"], st["px"], st["py"], st["pz"] = x, y, z, px, py, pz
        # energy loss, scattering and delta rays: gas along the step, cylinders/disks crossed
        dE = np.zeros(n)
        th2 = np.zeros(n)
        ndel = np.zeros(n)
        ndel_solid = np.zeros(n)
        for sub, mat, pre in vols:
            _material_effects(st, sub, mat, s[sub] * mat.density_g_cm3, cfg, dE, th2, ndel, cfg.delta_t_min_gev, pre)
        kc = np.where(hit_surf, M.cyl[np.where(hit_surf, bestk, 0)], -1)
        for j, cyl in enumerate(M.cyls):
            sub = np.nonzero((kc == j) & (np.abs(z) <= cyl.z_half))[0]
            if len(sub):
                mat = M.mats[cyl.material]
                cos_psi = np.abs(x[sub] * px[sub] + y[sub] * py[sub]) / (cyl.r * p[sub])
                thick = cyl.x0_fraction * mat.x0_g_cm2 / np.maximum(cos_psi, 0.05)
                _material_effects(st, sub, mat, thick, cfg, dE, th2, ndel_solid, cfg.delta_t_min_solid_gev)
        for dsk in M.disks:
            on = np.abs(z - dsk.z) < 1e-9
            if on.any():
                r_here = np.hypot(x, y)
                sub = np.nonzero(on & (r_here >= dsk.r_min) & (r_here <= dsk.r_max))[0]
                if len(sub):
                    mat = M.mats[dsk.material]
                    thick = dsk.x0_fraction * mat.x0_g_cm2 / np.maximum(np.abs(pz[sub]) / p[sub], 0.05)
                    _material_effects(st, sub, mat, thick, cfg, dE, th2, ndel_solid, cfg.delta_t_min_solid_gev)
        # delta electrons, produced at a random point of the step on the helix
        if cfg.delta_rays:
            for mean, t_min in ((ndel, cfg.delta_t_min_gev), (ndel_solid, cfg.delta_t_min_solid_gev)):
                # Poisson(0) draws no random number: sampling the non-zero means alone is the same
                nz = np.nonzero(mean)[0]
                nd = np.zeros(n, np.int64)
                nd[nz] = rng.poisson(mean[nz])
                if nd.any():
                    new.append(_make_deltas(st, nd, t_min, x0_, y0_, z0_, cx, cy, rho, a0, da, s, pz, p, cfg, rng, reg))
        # momentum loss and scattering
        ekin_new = ekin - dE
        stopped = ekin_new < cfg.t_stop_gev
        pnew = np.sqrt(np.maximum(ekin_new * (ekin_new + 2 * m), 0))
        scale = np.where(stopped, 1.0, pnew / p)
        px, py, pz = px * scale, py * scale, pz * scale
        if cfg.multiple_scattering:
            th = np.sqrt(th2)
            sc = np.nonzero((th > 0) & ~stopped)[0]
            if len(sc):
                pp = pnew[sc]
                ux, uy, uz = px[sc] / pp, py[sc] / pp, pz[sc] / pp
                e1, e2 = sec.orthonormal(ux, uy, uz)
                g = rng.standard_normal((len(sc), 2)) * th[sc, None]
                u = np.stack([ux, uy, uz], 1) + g[:, :1] * e1 + g[:, 1:] * e2
                u *= (pp / np.linalg.norm(u, axis=1))[:, None]
                px[sc], py[sc], pz[sc] = u[:, 0], u[:, 1], u[:, 2]
        st["px"], st["py"], st["pz"] = px, py, pz
        # decays in flight
        if decayed.any():
            new.append(_decay(st, np.nonzero(decayed)[0], cfg, rng, reg))
        max_turns = np.where(p < cfg.soft_p_gev, cfg.soft_max_turns, cfg.max_turns)
        alive = (reach & ~stopped & ~decayed & ~left_z & (st["turns"] < max_turns)
                 & (st["ncross"] < cfg.max_crossings) & ~(hit_surf & (bestk >= M.world)))
        if not alive.all():
            idx = np.nonzero(alive)[0]
            st = {k: v[idx] for k, v in st.items()}
    cross = _concat_dicts(crossings, ("ev", "tid", "layer", "x", "y", "z", "px", "py", "pz", "m", "q"))
    return cross, concat_particles(new)


def _concat_dicts(parts, keys):
    if not parts:
        return {k: np.zeros(0, np.int64 if k in ("ev", "tid", "layer") else float) for k in keys}
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


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
