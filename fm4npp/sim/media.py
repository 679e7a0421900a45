"""Material along a charged step: detector lookups (_Media); energy loss, scattering, delta counts."""

from __future__ import annotations

import numpy as np

from fm4npp.sim import secondaries as sec
from fm4npp.sim.config import TransportConfig
from fm4npp.sim.energy_loss import bethe, highland
from fm4npp.sim.geometry import Detector, Material


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


def solids_crossed(st: dict, M: _Media, p, hit_surf, bestk):
    """(particles, material, grammage along their path in g/cm^2) of every cylinder and disk
    crossed at the end of a step; the path is the sheet's thickness over the crossing angle
    (capped at 1/0.05, a grazing crossing)."""
    x, y, z, px, py, pz = st["x"], st["y"], st["z"], st["px"], st["py"], st["pz"]
    kc = np.where(hit_surf, M.cyl[np.where(hit_surf, bestk, 0)], -1)
    for j, cyl in enumerate(M.cyls):
        sub = np.nonzero((kc == j) & (np.abs(z) <= cyl.z_half))[0]
        if len(sub):
            mat = M.mats[cyl.material]
            cos_psi = np.abs(x[sub] * px[sub] + y[sub] * py[sub]) / (cyl.r * p[sub])
            yield sub, mat, cyl.x0_fraction * mat.x0_g_cm2 / np.maximum(cos_psi, 0.05)
    for dsk in M.disks:
        on = np.abs(z - dsk.z) < 1e-9
        if on.any():
            r_here = np.hypot(x, y)
            sub = np.nonzero(on & (r_here >= dsk.r_min) & (r_here <= dsk.r_max))[0]
            if len(sub):
                mat = M.mats[dsk.material]
                yield sub, mat, dsk.x0_fraction * mat.x0_g_cm2 / np.maximum(np.abs(pz[sub]) / p[sub], 0.05)


def step_material(st: dict, g: dict, M: _Media, cfg: TransportConfig, vols, s, hit_surf, bestk):
    """Energy loss, scattering and delta rays of a step: gas along it (``vols``: per volume
    (sub, mat, bethe)), cylinders and disks crossed at its end. Returns (dE, theta^2, mean
    delta count in gas, mean delta count in solids) per particle."""
    n = len(st["ev"])
    p = g["p"]
    dE = np.zeros(n)
    th2 = np.zeros(n)
    ndel = np.zeros(n)
    ndel_solid = np.zeros(n)
    for sub, mat, pre in vols:
        _material_effects(st, sub, mat, s[sub] * mat.density_g_cm3, cfg, dE, th2, ndel, cfg.delta_t_min_gev, pre)
    for sub, mat, thick in solids_crossed(st, M, p, hit_surf, bestk):
        _material_effects(st, sub, mat, thick, cfg, dE, th2, ndel_solid, cfg.delta_t_min_solid_gev)
    return dE, th2, ndel, ndel_solid
