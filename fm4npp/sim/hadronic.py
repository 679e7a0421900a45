"""Hadronic absorption in material ("extended" list): inelastic interaction stops the hadron, slow nuclear fragments are emitted.

The inelastic probability of a step is 1 - exp(-sum x_j / lambda_I,j) over the gas and the
solid crossings of the step (lambda_I ~ 35 A^(1/3) g/cm^2, :mod:`fm4npp.sim.physics_list`).
The hadron ends there. What the target nucleus emits is a rough model of the slow component
only (the fast shower particles of the interaction, and neutrons, are not produced):

- heavy prongs (protons, deuterons, alphas), Poisson with mean 2 (A/12)^(2/3): order of the
  ~2 heavy prongs per inelastic collision on C/N/O seen in nuclear emulsion, scaled with the
  nuclear surface; split 70 % p, 15 % d, 15 % alpha;
- their kinetic energies: evaporation, T exp(-T/theta) with theta = 3 MeV (light-nucleus
  evaporation temperatures 2-4 MeV), and for a quarter of the protons the cascade ("grey")
  component, exponential with mean 100 MeV;
- de-excitation photons, Poisson mean 1, exponential energies with mean 1 MeV;
- all isotropic in the lab (the target is at rest; the forward boost of the cascade is neglected).

Units: cm, GeV, g/cm^2.
"""

from __future__ import annotations

import numpy as np

from fm4npp.sim import secondaries as sec
from fm4npp.sim.media import solids_crossed
from fm4npp.sim.particles import concat_particles, make_particles
from fm4npp.sim.physics_list import effective_za, nuclear_interaction_length

M_P = 0.93827208816
M_D = 1.87561294257
M_ALPHA = 3.727379378
PDG_D, PDG_ALPHA = 1000010020, 1000020040
# (pdg, charge, mass, share of the heavy prongs)
PRONGS = ((2212, 1.0, M_P, 0.70), (PDG_D, 1.0, M_D, 0.15), (PDG_ALPHA, 2.0, M_ALPHA, 0.15))
THETA_EVAP = 3e-3
T_CASCADE = 0.100
CASCADE_SHARE = 0.25
GAMMAS_MEAN = 1.0
E_GAMMA_MEAN = 1e-3


def is_hadron(pdg: np.ndarray) -> np.ndarray:
    """Charged hadrons the absorption applies to: not leptons, not nuclei (fragments)."""
    a = np.abs(pdg)
    return (a > 100) & (a < 1_000_000_000)


def step_depth(st, M, vol, s, hit_surf, bestk):
    """Per particle: sum of x / lambda_I over this step's gas path (in volume `vol`, -1: none)
    and the cylinder/disk it crossed at the step end, and the mass number of the material that
    dominates it."""
    n = len(st["ev"])
    tau = np.zeros(n)
    a_nuc = np.ones(n)
    best = np.zeros(n)

    def add(sub, mat, gram):
        t = gram / nuclear_interaction_length(mat)
        tau[sub] += t
        more = t > best[sub]
        best[sub[more]] = t[more]
        a_nuc[sub[more]] = effective_za(mat.z_over_a, mat.x0_g_cm2)[1]

    for j, v in enumerate(M.volumes):
        sub = np.nonzero(vol == j)[0]
        mat = M.mats[v.material]
        add(sub, mat, s[sub] * mat.density_g_cm3)
    p = np.sqrt(st["px"] ** 2 + st["py"] ** 2 + st["pz"] ** 2)  # after this step's energy loss
    for sub, mat, gram in solids_crossed(st, M, p, hit_surf, bestk):
        add(sub, mat, gram)
    return tau, a_nuc


def absorb(st, M, vol, s, hit_surf, bestk, candidates, cfg, rng, reg, new: list) -> np.ndarray:
    """Decide the inelastic interactions of this step (among `candidates`, a mask of charged
    hadrons still alive), append the fragments to `new`; returns the mask of absorbed ones."""
    absorbed = np.zeros(len(st["ev"]), bool)
    cand = candidates & is_hadron(st["pdg"])
    if not cand.any():
        return absorbed
    tau, a_nuc = step_depth(st, M, vol, s, hit_surf, bestk)
    idx = np.nonzero(cand & (tau > 0))[0]
    hit = idx[rng.random(len(idx)) < -np.expm1(-tau[idx])]
    absorbed[hit] = True
    if len(hit):
        new.append(fragments(st["ev"][hit], st["tid"][hit], st["gen"][hit], st["x"][hit], st["y"][hit],
                             st["z"][hit], a_nuc[hit], cfg, rng, reg))
    return absorbed


def fragments(ev, parent, gen, x, y, z, a_nuc, cfg, rng, reg) -> dict:
    """Slow fragments of inelastic interactions at (x, y, z) on nuclei of mass number a_nuc."""
    n_h = rng.poisson(2.0 * (a_nuc / 12.0) ** (2 / 3))
    src = np.repeat(np.arange(len(ev)), n_h)
    kind = np.searchsorted(np.cumsum([k[3] for k in PRONGS])[:-1], rng.random(len(src)), side="right")
    t = rng.gamma(2.0, THETA_EVAP, len(src))  # T exp(-T/theta)
    casc = (kind == 0) & (rng.random(len(src)) < CASCADE_SHARE)
    t[casc] = rng.exponential(T_CASCADE, int(casc.sum()))
    n_g = rng.poisson(GAMMAS_MEAN, len(ev))
    gsrc = np.repeat(np.arange(len(ev)), n_g)
    out = []
    for j, (code, q, m, _) in enumerate(PRONGS):
        k = np.nonzero(kind == j)[0]
        if len(k):
            p = np.sqrt(t[k] * (t[k] + 2 * m))
            out.append(_isotropic(src[k], code, q, m, p, ev, parent, gen, x, y, z, cfg, rng, reg))
    if len(gsrc):
        out.append(_isotropic(gsrc, 22, 0.0, 0.0, rng.exponential(E_GAMMA_MEAN, len(gsrc)), ev, parent, gen,
                              x, y, z, cfg, rng, reg))
    return concat_particles(out)


def _isotropic(src, code, q, m, p, ev, parent, gen, x, y, z, cfg, rng, reg):
    ux, uy, uz = sec._isotropic(len(src), rng)
    px, py, pz = p * ux, p * uy, p * uz
    n = len(src)
    pdg = np.full(n, code, np.int64)
    qq = np.full(n, q)
    vx, vy, vz = x[src].copy(), y[src].copy(), z[src].copy()
    tid = reg.add(ev[src], pdg, qq, px, py, pz, vx, vy, vz, parent[src], False)
    return make_particles(ev[src], tid, pdg, qq, np.full(n, m), vx, vy, vz, px, py, pz, gen[src] + 1, rng, cfg)
