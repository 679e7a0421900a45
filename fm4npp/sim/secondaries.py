"""Truth bookkeeping and secondary-particle kinematics, vectorised over particles.

Decays in flight of pi+- and K+- (two-body channels), delta electrons with the 1/T^2
spectrum, photon conversions into e+e- pairs. Units: GeV, GeV/c, cm.
"""

from __future__ import annotations

import numpy as np

K_BETHE = 0.307075e-3  # GeV cm^2/mol: 4 pi N_A r_e^2 m_e c^2 (PDG), of Bethe and delta rays

ME = 0.51099895e-3  # electron mass [GeV]
M_MU = 0.1056583755
M_PI = 0.13957039
M_PI0 = 0.1349768
M_K = 0.493677

# Masses and charges of the particles the transport creates itself (generator particles get
# theirs from PYTHIA's particle data).
MASS = {11: ME, 13: M_MU, 211: M_PI, 321: M_K, 111: M_PI0, 22: 0.0, 12: 0.0, 14: 0.0}
CHARGE = {11: -1.0, 13: -1.0, 211: 1.0, 321: 1.0, 111: 0.0, 22: 0.0, 12: 0.0, 14: 0.0}

# c*tau [cm] of the particles decayed in flight, and their two-body channels for the positive
# state (daughter pdg ids; the charge-conjugate for the negative). K+ -> mu+ nu (63.6 %) and
# pi+ pi0 (20.7 %) renormalised: the 3-body modes (16 %) are lumped into these.
CTAU_CM = {211: 780.45, 321: 371.2}
DECAY_CHANNELS = {
    211: [(1.0, (-13, 14))],
    321: [(0.636 / 0.843, (-13, 14)), (0.207 / 0.843, (211, 111))],
}


def charge_of(pdg: np.ndarray) -> np.ndarray:
    a = np.abs(pdg)
    out = np.zeros(len(a))
    for k, c in CHARGE.items():
        out[a == k] = c
    return out * np.sign(pdg)


class TrackRegistry:
    """Every particle of a batch of events, in creation order; track id = row number.

    Generator particles first (parent -1), then secondaries with their parent's id.
    """

    FIELDS = ("ev", "pdg", "q", "px", "py", "pz", "vx", "vy", "vz", "parent", "primary")

    def __init__(self):
        self._parts: list[dict] = []
        self.n = 0

    def add(self, ev, pdg, q, px, py, pz, vx, vy, vz, parent, primary) -> np.ndarray:
        n = len(ev)
        row = dict(ev=ev, pdg=pdg, q=q, px=px, py=py, pz=pz, vx=vx, vy=vy, vz=vz,
                   parent=np.broadcast_to(parent, (n,)), primary=np.broadcast_to(primary, (n,)))
        self._parts.append({k: np.asarray(v) for k, v in row.items()})
        tid = np.arange(self.n, self.n + n, dtype=np.int64)
        self.n += n
        return tid

    def arrays(self) -> dict:
        if not self._parts:
            return {k: np.zeros(0) for k in self.FIELDS}
        return {k: np.concatenate([p[k] for p in self._parts]) for k in self.FIELDS}


def _isotropic(n, rng):
    cos_t = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2 * np.pi, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    return sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t


def two_body(p3: np.ndarray, m_parent: np.ndarray, m1: np.ndarray, m2: np.ndarray, rng):
    """Isotropic two-body decays boosted to the lab. p3: (N,3) parent momenta. Returns the
    (N,3) momenta of daughters 1 and 2."""
    M = m_parent
    pstar = np.sqrt(np.maximum((M**2 - (m1 + m2) ** 2) * (M**2 - (m1 - m2) ** 2), 0.0)) / (2 * M)
    nx, ny, nz = _isotropic(len(M), rng)
    n = np.stack([nx, ny, nz], axis=1)
    E = np.sqrt(np.sum(p3**2, axis=1) + M**2)
    beta = p3 / E[:, None]
    b2 = np.sum(beta**2, axis=1)
    gamma = E / M
    out = []
    for sign, m in ((1.0, m1), (-1.0, m2)):
        q = sign * pstar[:, None] * n
        e = np.sqrt(pstar**2 + m**2)
        bq = np.sum(beta * q, axis=1)
        coef = np.where(b2 > 0, (gamma - 1) * bq / np.where(b2 > 0, b2, 1.0), 0.0) + gamma * e
        out.append(q + coef[:, None] * beta)
    return out[0], out[1]


def choose_channels(apdg: np.ndarray, rng) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Split decaying particles (|pdg|) by channel: [(indices, (d1, d2)), ...]."""
    u = rng.random(len(apdg))
    out = []
    for parent, channels in DECAY_CHANNELS.items():
        sel = apdg == parent
        lo = 0.0
        for br, daughters in channels:
            idx = np.nonzero(sel & (u >= lo) & (u < lo + br))[0]
            lo += br
            if len(idx):
                out.append((idx, daughters))
    return out


def orthonormal(ux, uy, uz):
    """Two unit vectors perpendicular to the unit vectors u (N,) each, as (N,3) arrays."""
    # u x z-hat, falling back to u x x-hat for tracks along the beam
    ax = np.where(np.abs(uz) < 0.99, 0.0, 1.0)
    az = 1.0 - ax
    e1 = np.empty((len(ux), 3))
    e1[:, 0] = uy * az
    e1[:, 1] = uz * ax - ux * az
    e1[:, 2] = -uy * ax
    e1 /= np.sqrt(e1[:, 0] ** 2 + e1[:, 1] ** 2 + e1[:, 2] ** 2)[:, None]
    # e2 = u x e1, written out: np.cross has a large per-call overhead
    e2 = np.empty_like(e1)
    e2[:, 0] = uy * e1[:, 2] - uz * e1[:, 1]
    e2[:, 1] = uz * e1[:, 0] - ux * e1[:, 2]
    e2[:, 2] = ux * e1[:, 1] - uy * e1[:, 0]
    return e1, e2


def pair_energies(e_gamma, rng):
    """Energy shared by a conversion pair: electron fraction uniform in (m_e/E, 1 - m_e/E)."""
    lo = ME / e_gamma
    x = lo + (1 - 2 * lo) * rng.random(len(e_gamma))
    return x * e_gamma, (1 - x) * e_gamma
