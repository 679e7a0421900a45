"""Vectorised transport of particles through a :class:`~fm4npp.sim.geometry.Detector`.

Charged particles move on helices in the uniform field Bz. Each iteration advances *every*
live particle at once to its next event: the next cylindrical surface it crosses (found
analytically from its transverse circle among the three surfaces around it), a decay in
flight, a medium step limit, a disk (central membrane) or the end of the world. Loopers simply
take many iterations (capped in turns). On the way: Bethe mean energy loss with the density
effect (momentum loss along the path), Highland multiple scattering in gas steps and on
material crossings, delta electrons with the 1/T^2 spectrum, pi/K decays in flight.
Photons fly straight and convert into e+e- in material (P = 1 - exp(-7/9 x/X0)).
Secondaries are returned and transported by the caller in the next generation. The
"extended" physics list (:mod:`fm4npp.sim.physics_list`) adds hadronic absorption
(:mod:`fm4npp.sim.hadronic`) and, in the caller, the photon processes of
:mod:`fm4npp.sim.photon_transport`.
Units: cm, GeV, GeV/c, tesla.

The pieces: :mod:`fm4npp.sim.helix` (the field step), :mod:`fm4npp.sim.media` (material along
a step), :mod:`fm4npp.sim.energy_loss` (Bethe, Highland), :mod:`fm4npp.sim.emission` (deltas,
decays), :mod:`fm4npp.sim.photons` (conversions), :mod:`fm4npp.sim.particles` (the arrays).
"""

from __future__ import annotations

import numpy as np

from fm4npp.sim import hadronic, physics_list
from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import TransportConfig
from fm4npp.sim.emission import _decay, emit_deltas
from fm4npp.sim.energy_loss import bethe
from fm4npp.sim.geometry import Detector
from fm4npp.sim.helix import EPS_ARC, KB, TWO_PI, advance, helix, layer_crossings, next_surface
from fm4npp.sim.media import _Media, step_material
from fm4npp.sim.particles import _concat_dicts, concat_particles


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
    st = _initial_state(P, M)
    kb = KB * abs(M.b)
    bsign = 1.0 if M.b >= 0 else -1.0
    LR = M.layer_r
    crossings = []
    new = []
    it = 0
    extended = physics_list.is_extended(cfg)
    while len(st["ev"]) and it < 10 * cfg.max_crossings:
        it += 1
        g = helix(st, kb, bsign)
        best, bestk, inv = next_surface(st, g, M)
        reach_mat = np.isfinite(best)
        # a particle that can reach neither a material surface nor a layer is done
        rlo, rhi = np.abs(g["d"] - g["rho"]), g["d"] + g["rho"]
        reach = reach_mat | (np.searchsorted(LR, rhi) > np.searchsorted(LR, rlo))
        ratio = g["p"] / g["pt"]  # 3D path per transverse path
        s_surf = best * ratio
        s, s_z, ekin, vols = _step_length(st, g, M, cfg, best, reach_mat, ratio, s_surf)
        hit_surf = reach_mat & (s == s_surf)
        decayed = (s == st["sdec"]) & ~hit_surf
        left_z = s == s_z
        ds_t = s / ratio
        layer_crossings(st, g, M, ds_t, inv, rlo, rhi, crossings)
        start = (st["x"], st["y"], st["z"])
        da = advance(st, g, s, ds_t, hit_surf, bestk)
        dE, th2, ndel, ndel_solid = step_material(st, g, M, cfg, vols, s, hit_surf, bestk)
        if cfg.delta_rays:
            emit_deltas(st, g, start, da, s, ndel, ndel_solid, cfg, rng, reg, new)
        stopped = _lose_and_scatter(st, g["p"], cfg, rng, ekin, dE, th2)
        if extended:
            stopped |= hadronic.absorb(st, M, vols, s, hit_surf, bestk, ~stopped & ~decayed, cfg, rng, reg, new)
        # decays in flight
        if decayed.any():
            new.append(_decay(st, np.nonzero(decayed)[0], cfg, rng, reg))
        max_turns = np.where(g["p"] < cfg.soft_p_gev, cfg.soft_max_turns, cfg.max_turns)
        alive = (reach & ~stopped & ~decayed & ~left_z & (st["turns"] < max_turns)
                 & (st["ncross"] < cfg.max_crossings) & ~(hit_surf & (bestk >= M.world)))
        if not alive.all():
            idx = np.nonzero(alive)[0]
            st = {k: v[idx] for k, v in st.items()}
    cross = _concat_dicts(crossings, ("ev", "tid", "layer", "x", "y", "z", "px", "py", "pz", "m", "q"))
    return cross, concat_particles(new)


def _initial_state(P: dict, M: _Media) -> dict:
    """The transported state: the charged particles of P with a transverse momentum, plus
    their surface index, turns, crossing count and electron flag."""
    keep = (P["q"] != 0) & (np.hypot(P["px"], P["py"]) > 1e-5)
    st = {k: np.array(v[keep]) for k, v in P.items()}
    st["lo"] = np.searchsorted(M.r, np.hypot(st["x"], st["y"]), side="right") - 1
    n = len(st["ev"])
    st["turns"] = np.zeros(n)
    st["ncross"] = np.zeros(n, np.int64)
    st["ele"] = np.abs(st["pdg"]) == 11
    return st


def _step_length(st: dict, g: dict, M: _Media, cfg: TransportConfig, best, reach_mat, ratio, s_surf):
    """Path length of this step: the first of the next surface, the decay point, max_step, one
    turn, the energy-loss limit of the step's medium, the end of the world and the disks.
    Returns (s, path to the end of the world, kinetic energy, [(sub, mat, bethe) per volume])."""
    z, pz, m = st["z"], st["pz"], st["m"]
    p, pt, rho, h, d2, d, ac, a0 = g["p"], g["pt"], g["rho"], g["h"], g["d2"], g["d"], g["ac"], g["a0"]
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
    return s, s_z, ekin, vols


def _lose_and_scatter(st: dict, p, cfg: TransportConfig, rng, ekin, dE, th2) -> np.ndarray:
    """Momentum loss (p: momentum at the step start) and multiple scattering at the end of the
    step; returns who stopped."""
    m = st["m"]
    ekin_new = ekin - dE
    stopped = ekin_new < cfg.t_stop_gev
    pnew = np.sqrt(np.maximum(ekin_new * (ekin_new + 2 * m), 0))
    scale = np.where(stopped, 1.0, pnew / p)
    px, py, pz = st["px"] * scale, st["py"] * scale, st["pz"] * scale
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
    return stopped
