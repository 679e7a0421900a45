"""Transport of particles and their secondaries through a detector, and single-particle simulation (physics tests, studies)."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import physics_list
from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import DigitizeConfig, SimConfig, TransportConfig
from fm4npp.sim.digitize import digitize
from fm4npp.sim.geometry import Detector, get_detector
from fm4npp.sim.media import _Media
from fm4npp.sim.particles import _concat_dicts, concat_particles, make_particles
from fm4npp.sim.photon_transport import interact_photons
from fm4npp.sim.photons import convert_photons
from fm4npp.sim.transport import propagate_charged


def transport_all(P0: dict, reg: sec.TrackRegistry, det: Detector, tcfg: TransportConfig, rng) -> dict:
    """Transport particles and, generation by generation, their secondaries; returns all
    measurement-layer crossings."""
    tcfg = physics_list.resolve(tcfg)  # baseline: unchanged
    photons_fn = interact_photons if physics_list.is_extended(tcfg) else convert_photons
    media = _Media(det)
    parts = []
    P = P0
    for gen in range(tcfg.max_generations + 1):
        if not len(P["ev"]):
            break
        charged = {k: v[P["q"] != 0] for k, v in P.items()}
        photons = {k: v[P["pdg"] == 22] for k, v in P.items()}
        cross, s1 = propagate_charged(charged, det, tcfg, rng, reg, media)
        s2 = photons_fn(photons, det, tcfg, rng, reg)
        parts.append(cross)
        P = concat_particles([s1, s2])
    keys = ("ev", "tid", "layer", "x", "y", "z", "px", "py", "pz", "m", "q")
    return _concat_dicts(parts, keys)


def simulate_particles(pdg, p3, vertex=(0.0, 0.0, 0.0), detector: Detector | str | None = None, rng=None,
                       cfg: SimConfig | None = None, transport: TransportConfig | None = None,
                       digit: DigitizeConfig | None = None):
    """Transport a list of particles (one event) through `detector` (a Detector, a detector
    name or file path; default SimConfig's).

    pdg: (N,) PDG ids; p3: (N,3) momenta [GeV/c]; vertex: (3,) or (N,3) [cm]. Returns
    (hits, tracks): hits a dict of arrays (x, y, z, energy, layer, subsystem, sigma_rphi,
    sigma_z, true_x/y/z, tid, pdg), tracks the truth
    registry arrays (row = tid; pdg, q, px.., vx.., parent, primary).
    """
    cfg = cfg or SimConfig()
    transport = transport or cfg.transport
    digit = digit or cfg.digitize
    det = get_detector(detector) if isinstance(detector, str) else (detector or get_detector(cfg.detector))
    rng = rng if rng is not None else np.random.default_rng(0)
    pdg = np.atleast_1d(np.asarray(pdg, np.int64))
    p3 = np.atleast_2d(np.asarray(p3, float))
    v = np.broadcast_to(np.asarray(vertex, float), (len(pdg), 3))
    q = np.array([_charge(int(c)) for c in pdg])
    m = np.array([_mass(int(c)) for c in pdg])
    reg = sec.TrackRegistry()
    ev = np.zeros(len(pdg), np.int64)
    tid = reg.add(ev, pdg, q, p3[:, 0], p3[:, 1], p3[:, 2], v[:, 0], v[:, 1], v[:, 2], -1, True)
    P0 = make_particles(ev, tid, pdg, q, m, v[:, 0].copy(), v[:, 1].copy(), v[:, 2].copy(),
                        p3[:, 0].copy(), p3[:, 1].copy(), p3[:, 2].copy(), 0, rng, transport)
    cross = transport_all(P0, reg, det, transport, rng)
    hits = digitize(cross, det, digit, transport, rng)
    tracks = reg.arrays()
    hits["pdg"] = tracks["pdg"][hits["tid"]]
    return hits, tracks


_EXTRA_MASS = {2212: 0.93827208816, 22: 0.0}
_EXTRA_CHARGE = {2212: 1.0, 22: 0.0}


def _mass(code: int) -> float:
    a = abs(code)
    if a in sec.MASS:
        return sec.MASS[a]
    if a in _EXTRA_MASS:
        return _EXTRA_MASS[a]
    raise ValueError(f"simulate_particles: no mass known for pdg {code}")


def _charge(code: int) -> float:
    a = abs(code)
    c = sec.CHARGE.get(a, _EXTRA_CHARGE.get(a))
    if c is None:
        raise ValueError(f"simulate_particles: no charge known for pdg {code}")
    return c * (1 if code > 0 else -1)
