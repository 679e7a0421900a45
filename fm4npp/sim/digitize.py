"""Layer crossings -> spacepoints with truth, and the Arrow table of events.

One spacepoint per (track, layer) crossing on the layer-centre radius; lost in sector gaps, at
|z| < z_min (central membrane) and beyond the drift length; crossings of one track in one layer
that fall in the same (r-phi, z) cell are one cluster (curling delta electrons). Charge: the
restricted Bethe loss in the pad-row path (cut = delta-electron threshold: harder deltas are
explicit particles), sampled as a Poisson number of primary clusters with a 1/E^2 energy
spectrum -- Landau-like fluctuations, so a truncated mean separates pi/K/p/e. Units: cm, GeV.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fm4npp.data.schema import EVENT_SCHEMA, NOISE_P_MAX, TRACK_TYPE, pid_class_of
from fm4npp.sim.config import DigitizeConfig
from fm4npp.sim.energy_loss import bethe
from fm4npp.sim.geometry import Detector


def _spectrum_moments(a, b, e_min, e_max):
    """Probability, mean and second moment of E in [a, b] for f(E) ~ 1/E^2 on [e_min, e_max]."""
    norm = 1 / e_min - 1 / e_max
    prob = (1 / a - 1 / b) / norm
    mean = np.log(b / a) / (1 / a - 1 / b)
    m2 = (b - a) / (1 / a - 1 / b)
    return prob, mean, m2


def deposit(path_cm, bg, mass, q2, electron, mat, t_cut, cfg: DigitizeConfig, rng):
    """Sampled ionisation [GeV] of crossings with 3D path `path_cm` in `mat`.

    Primary clusters: Poisson in number, 1/E^2 energies on [e_min, t_cut], mean total = the
    restricted Bethe loss. The many soft clusters (E < 20 e_min) are summed as a Gamma variate
    with their exact mean and variance; the rare hard ones (the Landau tail) are sampled.
    """
    dedx, _, _ = bethe(bg, mass, q2, mat, electron=electron, t_cut=t_cut)
    mean = dedx * mat.density_g_cm3 * path_cm
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
    return soft + hard


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


def digitize(cross: dict, det: Detector, cfg: DigitizeConfig, t_cut: float, rng) -> dict:
    """Crossings (from transport) -> hits dict (ev, tid, layer, x, y, z, energy), in crossing
    order, after acceptance, merging, charge and smearing."""
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
    path = np.minimum(pitch / ur, cfg.max_path_factor * pitch)
    # charge (per crossing, summed when merged)
    e_dep = np.zeros(len(idx))
    for j, md in enumerate(mods):
        sel = np.nonzero(mi == j)[0]
        if len(sel):
            mat = det.material(md.sensitive)
            e_dep[sel] = deposit(path[sel], p[sel] / m[sel], m[sel], q[sel] ** 2,
                                 np.abs(m[sel] - 0.000511) < 1e-6, mat, t_cut, cfg, rng)
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
    first = order[start]  # first crossing of each cluster (lexsort is stable)
    keep = np.sort(first)
    e_keep = np.empty(len(idx))
    e_keep[first] = e_sum
    e_keep = e_keep[keep]
    adc = e_keep * 1e6 * cfg.adc_per_kev
    above = adc >= cfg.adc_threshold
    keep = keep[above]
    adc = np.minimum(adc[above], cfg.adc_max)
    r, phi, z, mi = r[keep], phi[keep], z[keep], mi[keep]
    if cfg.smear:
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
        g = rng.standard_normal((len(keep), 2))
        phi = phi + g[:, 0] * s_rphi / r
        z = z + g[:, 1] * s_z
        # a cluster reconstructed outside the drift volume does not exist
        inside = (np.abs(z) >= zmin[idx][keep]) & (np.abs(z) <= zmax[idx][keep])
        keep, r, phi, z, adc = keep[inside], r[inside], phi[inside], z[inside], adc[inside]
    return dict(ev=ev[keep], tid=tid[keep], layer=layer[keep], x=r * np.cos(phi), y=r * np.sin(phi), z=z,
                energy=adc)


def _list(offsets, values, typ):
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, typ))


def build_table(hits: dict, reg: dict, n_events: int, event_ids: np.ndarray) -> pa.Table:
    """Arrow table (EVENT_SCHEMA) of the events 0..n_events-1 of a batch with at least one hit,
    event_id = event_ids[local event]. Tracks: every particle with hits plus its ancestors,
    renumbered 0..n-1 per event in creation order (track_id = position in the list)."""
    ev = hits["ev"]
    has = np.bincount(ev, minlength=n_events) > 0
    keep_ev = np.nonzero(has)[0]
    new_ev = np.full(n_events, -1)
    new_ev[keep_ev] = np.arange(len(keep_ev))
    n_out = len(keep_ev)
    # tracks: hit makers and their ancestors
    n_reg = len(reg["ev"])
    need = np.zeros(n_reg, bool)
    need[hits["tid"]] = True
    parent = reg["parent"].astype(np.int64)
    while True:
        par = parent[need]
        par = par[par >= 0]
        fresh = par[~need[par]]
        if not len(fresh):
            break
        need[fresh] = True
    tsel = np.nonzero(need)[0]  # ascending = creation order
    tev = new_ev[reg["ev"][tsel]]
    order = np.lexsort((tsel, tev))
    tsel, tev = tsel[order], tev[order]
    t_off = np.concatenate([[0], np.cumsum(np.bincount(tev, minlength=n_out))])
    local = np.arange(len(tsel)) - t_off[tev]
    local_of = np.full(n_reg, -1, np.int64)
    local_of[tsel] = local
    # hits grouped by event, crossing order kept inside an event
    horder = np.argsort(new_ev[ev], kind="stable")
    hev = new_ev[ev][horder]
    h_off = np.concatenate([[0], np.cumsum(np.bincount(hev, minlength=n_out))])
    htid = hits["tid"][horder]
    pdg = reg["pdg"][htid].astype(np.int32)
    p_prod = np.sqrt(reg["px"] ** 2 + reg["py"] ** 2 + reg["pz"] ** 2)
    cols = {
        "event_id": pa.array(event_ids[keep_ev], pa.int64()),
        "hit_x": _list(h_off, hits["x"][horder].astype(np.float32), pa.float32()),
        "hit_y": _list(h_off, hits["y"][horder].astype(np.float32), pa.float32()),
        "hit_z": _list(h_off, hits["z"][horder].astype(np.float32), pa.float32()),
        "hit_energy": _list(h_off, hits["energy"][horder].astype(np.float32), pa.float32()),
        "hit_track_id": _list(h_off, local_of[htid].astype(np.int32), pa.int32()),
        "hit_pdg": _list(h_off, pdg, pa.int32()),
        "hit_pid_class": _list(h_off, pid_class_of(pdg).astype(np.int8), pa.int8()),
        "hit_noise": _list(h_off, p_prod[htid] < NOISE_P_MAX, pa.bool_()),
    }
    par_local = np.where(parent[tsel] >= 0, local_of[np.maximum(parent[tsel], 0)], -1)
    f32 = lambda k: pa.array(reg[k][tsel].astype(np.float32), pa.float32())  # noqa: E731
    tracks = pa.StructArray.from_arrays(
        [pa.array(local.astype(np.int32), pa.int32()), pa.array(reg["pdg"][tsel].astype(np.int32), pa.int32()),
         pa.array(np.rint(reg["q"][tsel]).astype(np.int8), pa.int8()),
         f32("px"), f32("py"), f32("pz"), f32("vx"), f32("vy"), f32("vz"),
         pa.array(par_local.astype(np.int32), pa.int32()), pa.array(reg["primary"][tsel].astype(bool), pa.bool_())],
        fields=list(TRACK_TYPE),
    )
    cols["tracks"] = pa.ListArray.from_arrays(pa.array(t_off, pa.int32()), tracks)
    return pa.Table.from_pydict(cols, schema=EVENT_SCHEMA)
