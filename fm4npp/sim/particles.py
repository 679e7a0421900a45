"""Particle arrays of the transport: the fields, building (with decay lengths) and concatenating them."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import TransportConfig


PARTICLE_FIELDS = ("ev", "tid", "pdg", "q", "m", "x", "y", "z", "px", "py", "pz", "sdec", "gen")


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


def _concat_dicts(parts, keys):
    if not parts:
        return {k: np.zeros(0, np.int64 if k in ("ev", "tid", "layer") else float) for k in keys}
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}
