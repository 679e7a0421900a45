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

The pieces: :mod:`fm4npp.sim.step_kernel` (the field step and the material along it, compiled),
:mod:`fm4npp.sim.media` (the detector's lookups), :mod:`fm4npp.sim.emission` (deltas, decays),
:mod:`fm4npp.sim.photons` (conversions), :mod:`fm4npp.sim.particles` (the arrays).
"""

from __future__ import annotations

import numpy as np

from fm4npp.sim import emission_kernel, hadronic, physics_list, step_kernel
from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import TransportConfig
from fm4npp.sim.emission import _decay, register_deltas
from fm4npp.sim.geometry import Detector
from fm4npp.sim.step_kernel import KB
from fm4npp.sim.media import _Media
from fm4npp.sim.particles import concat_particles


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
    flags = np.array([cfg.energy_loss, cfg.multiple_scattering, cfg.delta_rays])
    fp = np.array([cfg.max_step_cm, cfg.max_eloss_fraction, cfg.highland_min_x0, cfg.delta_t_min_gev,
                   cfg.delta_t_min_solid_gev])
    crossings = []
    new = []
    it = 0
    extended = physics_list.is_extended(cfg)
    while len(st["ev"]) and it < 10 * cfg.max_crossings:
        it += 1
        f, iv, bv, cf, ci = _step(st, M, kb, bsign, flags, fp)
        p, s, da, ekin, dE, th2 = f[0], f[7], f[9], f[10], f[11], f[12]
        hit_surf, decayed, left_z, reach = bv
        bestk = iv[0]
        if cf.shape[1]:
            crossings.append((st["ev"][ci[1]], st["tid"][ci[1]], ci[0], cf))
        start = (st["x"], st["y"], st["z"])
        st.update(p=p, x=f[15], y=f[16], z=f[17], px=f[18], py=f[19], sdec=f[20], lo=iv[1])
        # delta electrons (none without delta rays: their means are 0), then loss and scattering
        dsrc, drows, st["px"], st["py"], st["pz"], stopped = emission_kernel.after_step(
            f[13:15], fp[3:5], st["px"], st["py"], st["pz"], st["m"], st["ele"], p, *start, f[4], f[5], f[2], f[6], da,
            s, ekin, dE, th2, cfg.t_stop_gev, cfg.multiple_scattering, rng)
        register_deltas(st, dsrc, drows, cfg, rng, reg, new)
        if extended:
            stopped |= hadronic.absorb(st, M, iv[2], s, hit_surf, bestk, ~stopped & ~decayed, cfg, rng, reg, new)
        # decays in flight
        if decayed.any():
            new.append(_decay(st, np.nonzero(decayed)[0], cfg, rng, reg))
        max_turns = np.where(p < cfg.soft_p_gev, cfg.soft_max_turns, cfg.max_turns)
        alive = (reach & ~stopped & ~decayed & ~left_z & (st["turns"] < max_turns)
                 & (st["ncross"] < cfg.max_crossings) & ~(hit_surf & (bestk >= M.world)))
        if not alive.all():
            idx = np.nonzero(alive)[0]
            st = {k: v[idx] for k, v in st.items()}
    return _crossing_arrays(crossings), concat_particles(new)


def _crossing_arrays(parts: list) -> dict:
    """The crossings of all iterations, (ev, tid, layer, float rows of the kernel) each, as one
    dict of arrays."""
    if not parts:
        parts = [(np.zeros(0, np.int64),) * 3 + (np.zeros((8, 0)),)]
    ev, tid, layer, rows = (np.concatenate([p[k] for p in parts], axis=-1) for k in range(4))
    out = dict(ev=ev, tid=tid, layer=layer)
    out.update({k: rows[r] for r, k in enumerate(("x", "y", "z", "px", "py", "pz", "m", "q"))})
    return out


def _step(st: dict, M: _Media, kb: float, bsign: float, flags, fp):
    """The compiled part of one iteration (:func:`fm4npp.sim.step_kernel.step`); turns and
    ncross of `st` are updated in place."""
    return step_kernel.step(st["x"], st["y"], st["z"], st["px"], st["py"], st["pz"], st["q"], st["m"], st["ele"],
                            st["lo"], st["sdec"], st["turns"], st["ncross"], kb, bsign, M.r, M.r2, M.layer_r,
                            M.layer_r2, M.world_z, M.vol_tab, M.mat_tab, M.cyl, M.cyl_tab, M.disk_tab, flags, fp)


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
