"""Detector files (TOML) -> :class:`~fm4npp.sim.detector.Detector`, every key checked.

Layout (units cm, T, g/cm^3, eV; the shipped files in fm4npp/sim/detectors/ are examples)::

    name, b_field_t, world_r, world_z
    [materials.<name>]   density_g_cm3, x0_g_cm2 | x0_cm, z_over_a, i_ev,
                         sternheimer = [C, x0, x1, a, k, delta0] | sternheimer_like = "argon"
    [[cylinders]]        name, r, z_half, x0_fraction, material     (beam pipe, field cages)
    [[disks]]            name, z, r_min, r_max, x0_fraction, material
    [[volumes]]          name, r_min, r_max, z_half, material       (gas)
    [[subsystems]]       name (fm4npp.data.schema.SUBSYSTEMS), readout (pad_row | pixel |
                         strip | drift_wire), and any module key as the default of its modules
      [[subsystems.modules]]  name, r_min + r_max + n_layers | layer_radii, z_min_abs,
                         z_max_abs | drift_length, resolution keys of the readout, sensitive,
                         n_sectors, active_phi_fraction, sector_phi0, thickness (solid),
                         x0_fraction (solid: sensor material per layer), stereo_deg (drift_wire),
                         adc_per_kev

A solid sensor layer with ``x0_fraction`` is also a material cylinder at its radius (multiple
scattering, energy loss, conversions in the sensor).
"""

from __future__ import annotations

import math

import numpy as np

from fm4npp.data.schema import SUBSYSTEM_IDS
from fm4npp.sim.detector import (READOUTS, SOLID_READOUTS, Detector, LayerModule, Material, MaterialCylinder,
                                 MaterialDisk, Volume)
from fm4npp.sim.spec_files import FRACTION, NON_NEGATIVE, POSITIVE, SpecFileError, Table, find, read

# Argon's Sternheimer x0, x1, k (PDG): a gas mix dominated by argon takes them, C from its own
# plasma energy and a from the continuity of delta at x0.
STERNHEIMER_LIKE = {"argon": (1.7635, 4.4855, 2.9618)}

# Resolution keys each readout takes (drift wires: sigma_z follows from the stereo angle).
RESOLUTION_KEYS = {
    "pad_row": ("sigma_rphi0", "sigma_rphi_drift", "sigma_z0", "sigma_z_drift", "angle_k"),
    "pixel": ("sigma_rphi0", "sigma_z0"),
    "strip": ("sigma_rphi0", "sigma_z0"),
    "drift_wire": ("sigma_rphi0", "angle_k"),
}
OPTIONAL_RESOLUTION = ("sigma_rphi_drift", "sigma_z_drift", "angle_k")


def load_detector(name_or_path: str) -> Detector:
    """The Detector of a shipped name (fm4npp/sim/detectors/<name>.toml) or of a file path."""
    path = find(name_or_path, "detectors")
    doc, digest = read(path)
    top = Table(path, "", doc)
    name = top.get("name", str)
    materials = tuple(_material(path, k, v) for k, v in top.get("materials", dict).items())
    top.used.add("materials")
    mat_names = {m.name for m in materials}

    def material_of(t: Table, key: str = "material") -> str:
        return t.get(key, str, check=lambda v: v in mat_names, why=f"not among [materials]: {sorted(mat_names)}")

    cylinders = [_simple(path, f"cylinders[{i}]", c, MaterialCylinder, ("r", "z_half", "x0_fraction"), material_of)
                 for i, c in enumerate(top.tables("cylinders", required=False))]
    disks = tuple(_simple(path, f"disks[{i}]", d, MaterialDisk, ("z", "r_min", "r_max", "x0_fraction"), material_of)
                  for i, d in enumerate(top.tables("disks", required=False)))
    volumes = tuple(_simple(path, f"volumes[{i}]", v, Volume, ("r_min", "r_max", "z_half"), material_of)
                    for i, v in enumerate(top.tables("volumes", required=False)))
    modules = []
    for i, s in enumerate(top.tables("subsystems")):
        modules += _subsystem(path, f"subsystems[{i}]", s, material_of, cylinders)
    _check_order(path, modules)
    det = Detector(
        name=name,
        b_field_t=top.get("b_field_t", float, check=lambda v: v != 0, why="a zero field bends nothing"),
        materials=materials, modules=tuple(modules), cylinders=tuple(cylinders), disks=disks, volumes=volumes,
        world_r=top.get("world_r", float, check=lambda v: v > modules[-1].r_max, why="must enclose the layers"),
        world_z=top.get("world_z", float, check=lambda v: v >= max(m.z_max_abs for m in modules),
                        why="must enclose the layers"),
        source=str(path), sha256=digest,
    )
    top.done()
    try:
        det.surfaces
    except ValueError as exc:
        raise SpecFileError(path, "cylinders", str(exc)) from None
    return det


def _material(path, name: str, data) -> Material:
    t = Table(path, f"materials.{name}", data)
    rho = t.get("density_g_cm3", float, check=POSITIVE[0], why=POSITIVE[1])
    za = t.get("z_over_a", float, check=lambda v: 0 < v <= 1, why="must be in (0, 1]")
    i_ev = t.get("i_ev", float, check=POSITIVE[0], why=POSITIVE[1])
    if t.has("x0_cm") == t.has("x0_g_cm2"):
        raise t.error("x0_g_cm2", "give exactly one of x0_g_cm2 and x0_cm")
    x0 = (t.get("x0_cm", float, check=POSITIVE[0], why=POSITIVE[1]) * rho if t.has("x0_cm")
          else t.get("x0_g_cm2", float, check=POSITIVE[0], why=POSITIVE[1]))
    if t.has("sternheimer") == t.has("sternheimer_like"):
        raise t.error("sternheimer", "give exactly one of sternheimer and sternheimer_like")
    if t.has("sternheimer"):
        st = t.floats("sternheimer", check=lambda v: len(v) == 6, why="must be [C, x0, x1, a, k, delta0]")
    else:
        like = t.get("sternheimer_like", str, check=lambda v: v in STERNHEIMER_LIKE, why=f"known: {sorted(STERNHEIMER_LIKE)}")
        st = _sternheimer_like(rho, za, i_ev, *STERNHEIMER_LIKE[like])
    t.done()
    return Material(name, rho, x0, za, i_ev, st)


def _sternheimer_like(rho, za, i_ev, x0, x1, k) -> tuple:
    # C from the plasma energy of the mix (hbar omega_p = 28.816 sqrt(rho Z/A) eV), a from the
    # continuity of delta at x0
    hw = 28.816 * np.sqrt(rho * za)
    c = 2 * np.log(i_ev / hw) + 1
    a = (c - 2 * np.log(10) * x0) / (x1 - x0) ** k
    return (float(c), x0, x1, float(a), k, 0.0)


def _simple(path, where, data, cls, number_keys, material_of):
    t = Table(path, where, data)
    kw = {k: t.get(k, float) for k in number_keys}
    obj = cls(name=t.get("name", str), material=material_of(t), **kw)
    t.done()
    return obj


def _subsystem(path, where, data, material_of, cylinders: list) -> list[LayerModule]:
    sub = Table(path, where, data)
    sname = sub.get("name", str, check=lambda v: v in SUBSYSTEM_IDS,
                    why=f"not a subsystem of fm4npp.data.schema.SUBSYSTEMS {sorted(SUBSYSTEM_IDS)}")
    readout = sub.get("readout", str, check=lambda v: v in READOUTS, why=f"readout must be one of {READOUTS}")
    inherited = {k: v for k, v in data.items() if k not in ("name", "readout", "modules")}
    out = []
    for j, m in enumerate(sub.tables("modules")):
        t = Table(path, f"{where}.modules[{j}]", m, inherited)
        out.append(_module(t, sname, readout, material_of, cylinders))
        t.done()
        sub.used |= t.used
    sub.done()
    return out


def _module(t: Table, subsystem: str, readout: str, material_of, cylinders: list) -> LayerModule:
    pos, nonneg = POSITIVE, NON_NEGATIVE
    kw = dict(name=t.get("name", str), subsystem=subsystem, readout=readout, sensitive=material_of(t, "sensitive"))
    if t.has("layer_radii"):
        radii = t.floats("layer_radii", check=lambda v: v[0] > 0 and all(b > a for a, b in zip(v, v[1:])),
                         why="must be positive and strictly ascending")
        kw.update(layer_radii=radii, r_min=radii[0], r_max=radii[-1], n_layers=len(radii))
    else:
        kw["r_min"] = t.get("r_min", float, check=pos[0], why=pos[1])
        kw["r_max"] = t.get("r_max", float, check=lambda v: v > kw["r_min"], why="must be > r_min")
        kw["n_layers"] = t.get("n_layers", int, check=lambda v: v >= 1, why="must be >= 1")
    kw["z_min_abs"] = t.get("z_min_abs", float, 0.0, *nonneg)
    if t.has("drift_length") == t.has("z_max_abs"):
        raise t.error("z_max_abs", "give exactly one of z_max_abs and drift_length")
    # the end of the drift volume measured from the central membrane's edge (a TPC's numbers)
    kw["z_max_abs"] = (kw["z_min_abs"] + t.get("drift_length", float, check=pos[0], why=pos[1])
                       if t.has("drift_length") else
                       t.get("z_max_abs", float, check=lambda v: v > kw["z_min_abs"], why="must be > z_min_abs"))
    if t.has("n_sectors"):
        kw["n_sectors"] = t.get("n_sectors", int, check=lambda v: v >= 1, why="must be >= 1")
    if t.has("active_phi_fraction"):
        kw["active_phi_fraction"] = t.get("active_phi_fraction", float, check=FRACTION[0], why=FRACTION[1])
    if t.has("sector_phi0"):
        kw["sector_phi0"] = t.get("sector_phi0", float)
    for key in RESOLUTION_KEYS[readout]:
        if key in OPTIONAL_RESOLUTION and not t.has(key):
            continue
        rule = pos if key.endswith("0") else nonneg  # sigma_*0 > 0; drift and angle terms >= 0
        kw[key] = t.get(key, float, check=rule[0], why=rule[1])
    if readout == "drift_wire":
        stereo = t.get("stereo_deg", float, 0.0, lambda v: abs(v) < 45, "must be within (-45, 45) degrees")
        kw["stereo_deg"] = stereo
        kw["sigma_z0"] = kw["sigma_rphi0"] / math.tan(math.radians(abs(stereo))) if stereo else math.inf
    if t.has("adc_per_kev"):
        kw["adc_per_kev"] = t.get("adc_per_kev", float, check=pos[0], why=pos[1])
    if readout in SOLID_READOUTS:
        kw["thickness"] = t.get("thickness", float, check=pos[0], why=pos[1])
        x0 = t.get("x0_fraction", float, 0.0, *nonneg)
        if x0 > 0:
            radii = kw.get("layer_radii") or tuple(LayerModule(**kw).radii)
            cylinders += [MaterialCylinder(f"{kw['name']}_{i}", r, kw["z_max_abs"], x0, kw["sensitive"])
                          for i, r in enumerate(radii)]
    return LayerModule(**kw)


def _check_order(path, modules: list[LayerModule]) -> None:
    """Layers ascend in radius through the modules, which do not overlap (the transport finds
    crossings by bisection in the concatenated radii)."""
    for a, b in zip(modules, modules[1:]):
        if b.r_min < a.r_max:
            raise SpecFileError(path, "subsystems", f"module {b.name!r} (r_min {b.r_min}) must lie outside "
                                f"module {a.name!r} (r_max {a.r_max}): list modules inside out, not overlapping")
