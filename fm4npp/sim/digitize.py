"""Layer crossings -> spacepoints with truth and per-point resolution, per readout kind.

One spacepoint per (track, layer) crossing on the layer radius; lost in sector gaps, at
|z| < z_min (central membrane) and beyond the drift length or sensor end; crossings of one
track in one layer that fall in the same (r-phi, z) cell are one cluster (curling delta
electrons). Charge: the restricted Bethe loss in the charge path, sampled as a Poisson number
of primary clusters with a 1/E^2 energy spectrum -- Landau-like fluctuations, so a truncated
mean separates pi/K/p/e. The path and the cut depend on the readout (fm4npp.sim.geometry):

- pad_row, drift_wire (gas): the radial cell crossed, cut = the gas delta threshold (harder
  deltas are explicit particles);
- pixel, strip (silicon): the sensor thickness, cut = the solid delta threshold (softer deltas
  stay in the sensor and are part of the cluster charge).

Smearing is Gaussian with the module's resolution (silicon: pitch/sqrt(12) -- a binary readout's
uniform residual replaced by a Gaussian of the same width). A drift wire measures r-phi; a
stereo wire also z, with sigma_rphi / tan|stereo|, as if it were an independent z measurement
(a real stereo hit measures one combination of r-phi and z, resolved only with the track's
axial hits); an axial wire leaves z unmeasured: z = 0 (the wire centre), sigma_z = +inf.
Units: cm, GeV.
"""

from __future__ import annotations

import numpy as np

from fm4npp.data.schema import SUBSYSTEM_IDS
from fm4npp.sim.config import DigitizeConfig, TransportConfig
from fm4npp.sim.energy_loss import bethe
from fm4npp.sim.geometry import Detector


def _spectrum_moments(a, b, e_min, e_max):
    """Probability, mean and second moment of E in [a, b] for f(E) ~ 1/E^2 on [e_min, e_max]."""
    norm = 1 / e_min - 1 / e_max
    prob = (1 / a - 1 / b) / norm
    mean = np.log(b / a) / (1 / a - 1 / b)
    m2 = (b - a) / (1 / a - 1 / b)
    return prob, mean, m2


def deposit(path_cm, bg, mass, q2, electron, mat, t_cut, cfg: DigitizeConfig, rng, ekin=None):
    """Sampled ionisation [GeV] of crossings with 3D path `path_cm` in `mat`, at most the
    kinetic energy `ekin` [GeV] of each crossing particle (when given).

    Primary clusters: Poisson in number, 1/E^2 energies on [e_min, t_cut], mean total = the
    restricted Bethe loss. The many soft clusters (E < 20 e_min) are summed as a Gamma variate
    with their exact mean and variance; the rare hard ones (the Landau tail) are sampled.
    """
    dedx, _, _ = bethe(bg, mass, q2, mat, electron=electron, t_cut=t_cut)
    mean = dedx * mat.density_g_cm3 * path_cm
    if ekin is not None:
        # a particle that stops in the sensor deposits what it has: Bethe at beta ~ 0.02
        # (evaporation protons) asks for up to 100 MeV in 320 um of silicon (~1e5 clusters)
        stops = mean >= ekin
        mean = np.where(stops, ekin, mean)
    e_min = cfg.cluster_e_min_gev
    e_split = 20 * e_min
    _, mu_all, _ = _spectrum_moments(e_min, t_cut, e_min, t_cut)
    lam = mean / mu_all  # mean number of clusters
    p_s, mu_s, m2_s = _spectrum_moments(e_min, e_split, e_min, t_cut)
    # soft part: compound Poisson sum, mean lam p_s mu_s, variance lam p_s m2_s -> Gamma
    m_soft = lam * p_s * mu_s
    v_soft = lam * p_s * m2_s
    shape = np.where(v_soft > 0, m_soft * m_soft / np.maximum(v_soft, 1e-300), 1.0)
    soft = np.where(m_soft > 0, rng.gamma(np.maximum(shape, 1e-6), 1.0) * (v_soft / np.maximum(m_soft, 1e-300)), 0.0)
    n_hard = rng.poisson(lam * (1 - p_s))
    u = rng.random(int(n_hard.sum()))
    e = 1.0 / (1.0 / e_split - u * (1.0 / e_split - 1.0 / t_cut))
    hard = np.bincount(np.repeat(np.arange(len(n_hard)), n_hard), weights=e, minlength=len(n_hard))
    return soft + hard if ekin is None else np.where(stops, ekin, np.minimum(soft + hard, ekin))


def _pack_keys(cols) -> np.ndarray:
    """One int64 per row that is equal exactly when all integer columns are (one stable sort
    instead of a lexsort over them); falls back to the row rank when the ranges do not fit."""
    key = np.zeros(len(cols[0]), np.int64)
    bits = 0
    for c in cols:
        if not len(c):
            return key
        lo = int(c.min())
        span = int(c.max()) - lo + 1
        bits += span.bit_length()
        if bits > 62:
            order = np.lexsort(cols[::-1])
            srt = np.stack([c[order] for c in cols], 1)
            rank = np.cumsum(np.concatenate([[False], np.any(srt[1:] != srt[:-1], axis=1)]))
            key[order] = rank
            return key
        key = key * span + (c - lo)
    return key


def digitize(cross: dict, det: Detector, cfg: DigitizeConfig, tcfg: TransportConfig, rng) -> dict:
    """Crossings (from transport) -> hits dict (ev, tid, layer, subsystem, x, y, z, energy,
    sigma_rphi, sigma_z; and true_x/y/z, the crossing before smearing), in crossing order,
    after acceptance, merging, charge and smearing."""
    layer = cross["layer"].astype(np.int64)
    radii = det.layer_radii
    mod_of = det.layer_module
    mods = det.modules
    r = radii[layer]
    mi = mod_of[layer]
    x, y, z = cross["x"], cross["y"], cross["z"]
    phi = np.arctan2(y, x)
    zmin = np.array([m.z_min_abs for m in mods])[mi]
    zmax = np.array([m.z_max_abs for m in mods])[mi]
    nsec = np.array([m.n_sectors for m in mods])[mi]
    frac = np.array([m.active_phi_fraction for m in mods])[mi]
    phi0 = np.array([m.sector_phi0 for m in mods])[mi]
    width = 2 * np.pi / nsec
    local = np.mod(phi - phi0, width)
    half_gap = 0.5 * (1 - frac) * width
    ok = (np.abs(z) >= zmin) & (np.abs(z) <= zmax) & (local >= half_gap) & (local <= width - half_gap)
    idx = np.nonzero(ok)[0]
    ev, tid = cross["ev"][idx], cross["tid"][idx]
    layer, r, mi, phi, z = layer[idx], r[idx], mi[idx], phi[idx], z[idx]
    px, py, pz = cross["px"][idx], cross["py"][idx], cross["pz"][idx]
    m, q = cross["m"][idx], cross["q"][idx]
    p = np.sqrt(px * px + py * py + pz * pz)
    # direction in the local (r, phi, z) frame
    cphi, sphi = np.cos(phi), np.sin(phi)
    ur = np.abs(px * cphi + py * sphi) / p
    uphi = np.abs(-px * sphi + py * cphi) / p
    uz = np.abs(pz) / p
    ur = np.maximum(ur, 1e-3)
    pitch = np.array([md.pitch for md in mods])[mi]
    charge_path = np.array([md.charge_path for md in mods])[mi]
    path = np.minimum(charge_path / ur, cfg.max_path_factor * charge_path)
    # charge (per crossing, summed when merged)
    e_dep = np.zeros(len(idx))
    for j, md in enumerate(mods):
        sel = np.nonzero(mi == j)[0]
        if len(sel):
            mat = det.material(md.sensitive)
            t_cut = tcfg.delta_t_min_solid_gev if md.solid else tcfg.delta_t_min_gev
            e_dep[sel] = deposit(path[sel], p[sel] / m[sel], m[sel], q[sel] ** 2,
                                 np.abs(m[sel] - 0.000511) < 1e-6, mat, t_cut, cfg, rng,
                                 ekin=np.hypot(p[sel], m[sel]) - m[sel])
    # merge crossings of one track in one layer and one (r-phi, z) cell
    iphi = np.floor(phi * r / cfg.merge_rphi_cm).astype(np.int64)
    iz = np.floor(z / cfg.merge_z_cm).astype(np.int64)
    # tid is unique over the batch (a registry row), so it implies ev
    key = _pack_keys((tid, layer, iphi, iz))
    order = np.argsort(key, kind="stable")
    start = np.ones(len(order), bool)
    ks = key[order]
    start[1:] = ks[1:] != ks[:-1]
    group = np.cumsum(start) - 1
    e_sum = np.bincount(group, weights=e_dep[order])
    first = order[start]  # first crossing of each cluster (the sort is stable)
    is_first = np.zeros(len(idx), bool)
    is_first[first] = True
    keep = np.nonzero(is_first)[0]  # in crossing order: a mask, not a sort
    e_keep = np.empty(len(idx))
    e_keep[first] = e_sum
    e_keep = e_keep[keep]
    gain = np.array([cfg.adc_per_kev if md.adc_per_kev is None else md.adc_per_kev for md in mods])[mi[keep]]
    adc = e_keep * 1e6 * gain
    above = adc >= cfg.adc_threshold
    keep = keep[above]
    adc = np.minimum(adc[above], cfg.adc_max)
    r, phi, z, mi = r[keep], phi[keep], z[keep], mi[keep]
    phi_true, z_true = phi, z
    drift = np.array([md.z_max_abs for md in mods])[mi] - np.abs(z)
    maxd = np.array([md.z_max_abs - md.z_min_abs for md in mods])[mi]
    dfrac = np.clip(drift / maxd, 0, 1)
    k = np.array([md.angle_k for md in mods])[mi] * pitch[keep]
    tan_a = np.minimum(uphi[keep] / ur[keep], 3.0)
    tan_l = np.minimum(uz[keep] / ur[keep], 3.0)
    s_rphi = np.sqrt(np.array([md.sigma_rphi0 for md in mods])[mi] ** 2
                     + np.array([md.sigma_rphi_drift for md in mods])[mi] ** 2 * dfrac + (k * tan_a) ** 2)
    s_z = np.sqrt(np.array([md.sigma_z0 for md in mods])[mi] ** 2
                  + np.array([md.sigma_z_drift for md in mods])[mi] ** 2 * dfrac + (k * tan_l) ** 2)
    measured_z = np.isfinite(s_z)
    if cfg.smear:
        g = rng.standard_normal((len(keep), 2))
        phi = phi + g[:, 0] * s_rphi / r
        z = np.where(measured_z, z + g[:, 1] * np.where(measured_z, s_z, 0.0), 0.0)
        # a cluster reconstructed outside the drift volume does not exist
        inside = (np.abs(z) >= zmin[idx][keep]) & (np.abs(z) <= zmax[idx][keep])
        keep, r, phi, z, adc = keep[inside], r[inside], phi[inside], z[inside], adc[inside]
        mi, s_rphi, s_z, phi_true, z_true = mi[inside], s_rphi[inside], s_z[inside], phi_true[inside], z_true[inside]
    else:
        z = np.where(measured_z, z, 0.0)
    subsystem = np.array([SUBSYSTEM_IDS[md.subsystem] for md in mods], np.int8)[mi]
    return dict(ev=ev[keep], tid=tid[keep], layer=layer[keep], x=r * np.cos(phi), y=r * np.sin(phi), z=z,
                energy=adc, subsystem=subsystem, sigma_rphi=s_rphi, sigma_z=s_z,
                true_x=r * np.cos(phi_true), true_y=r * np.sin(phi_true), true_z=z_true)
