"""The detector in array form for the transport (_Media), and the solids a step ends on."""

from __future__ import annotations

import numpy as np

from fm4npp.sim.geometry import Detector


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
        self._tables(det)

    def _tables(self, det: Detector) -> None:
        """The same lookups as float arrays for :mod:`fm4npp.sim.step_kernel`."""
        names = [m.name for m in det.materials]
        ix = {n: float(i) for i, n in enumerate(names)}
        self.mat_tab = np.array([[m.density_g_cm3, m.x0_g_cm2, m.z_over_a, m.i_ev, *m.sternheimer]
                                 for m in det.materials], float).reshape(-1, 10)
        self.vol_tab = np.array([[v.r_min, v.r_max, v.z_half, ix[v.material]] for v in det.volumes], float).reshape(-1, 4)
        self.cyl_tab = np.array([[c.r, c.z_half, c.x0_fraction, ix[c.material]] for c in det.cylinders], float).reshape(-1, 4)
        self.disk_tab = np.array([[d.z, d.r_min, d.r_max, d.x0_fraction, ix[d.material]] for d in det.disks],
                                 float).reshape(-1, 5)
        # a step's medium is the one volume around its midpoint
        for a in det.volumes:
            for b in det.volumes:
                if a is not b and a.r_min < b.r_max and b.r_min < a.r_max:
                    raise ValueError(f"detector {det.name!r}: volumes {a.name!r} and {b.name!r} overlap")


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
