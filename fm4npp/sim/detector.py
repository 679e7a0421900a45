"""Detectors as data: the in-memory form of a detector file (dataclasses).

A detector is a TOML file under ``fm4npp/sim/detectors/`` (or any path), read by
:mod:`fm4npp.sim.detector_files` into a :class:`Detector`: measurement layers grouped in
modules (each of one subsystem and one readout kind), material cylinders and disks, gas
volumes, the solenoid field (:mod:`fm4npp.sim.geometry` finds one by name). The transport (:mod:`fm4npp.sim.transport`) and the response
(:mod:`fm4npp.sim.digitize`) only read a Detector; a new detector is a new file, not new code.
Units: cm, tesla, g/cm^3, eV for mean excitation energies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np

# Readout kinds. Solid sensors (silicon) make their charge in the sensor thickness and keep
# deltas up to the solid delta threshold inside the cluster; gas readouts make it along the
# radial cell (pad row, drift cell). A drift wire measures r-phi; z only if it is a stereo wire.
READOUTS = ("pad_row", "pixel", "strip", "drift_wire")
SOLID_READOUTS = ("pixel", "strip")


@dataclass(frozen=True)
class Material:
    """Bulk properties for Bethe dE/dx (with Sternheimer density effect) and scattering."""

    name: str
    density_g_cm3: float
    x0_g_cm2: float  # radiation length
    z_over_a: float
    i_ev: float  # mean excitation energy
    # Sternheimer density-effect parameters (PDG tables): C, x0, x1, a, k, delta0
    sternheimer: tuple[float, float, float, float, float, float]

    @property
    def x0_cm(self) -> float:
        return self.x0_g_cm2 / self.density_g_cm3


@dataclass(frozen=True)
class LayerModule:
    """A group of measurement layers of one subsystem and readout kind.

    Layers sit at ``radii`` when given (silicon, wires), else equally spaced: layer i at
    r_min + (i + 1/2) (r_max - r_min) / n_layers (pad rows). Spacepoints lie on the layer radius.
    Resolutions: sigma^2 = sigma_0^2 + sigma_drift^2 * drift / max_drift + (k * L * tan(angle))^2,
    L = radial pitch, angle = crossing angle (r-phi) or dip angle (z) to the radial direction.
    A drift wire's sigma_z0 is sigma_rphi0 / tan|stereo| (stereo wire) or +inf (axial: z not
    measured), set by the detector-file reader.
    """

    name: str
    subsystem: str  # a name of fm4npp.data.schema.SUBSYSTEMS
    readout: str  # one of READOUTS
    r_min: float
    r_max: float
    n_layers: int
    z_min_abs: float  # no hits at |z| below (central membrane)
    z_max_abs: float  # no hits at |z| above (end of drift, end of the sensors)
    sigma_rphi0: float
    sigma_z0: float
    sensitive: str  # material whose ionisation makes the hit charge
    n_sectors: int = 1
    active_phi_fraction: float = 1.0  # hits in the gaps between sectors are lost
    sector_phi0: float = 0.0  # phi of the first sector boundary [rad]
    sigma_rphi_drift: float = 0.0
    sigma_z_drift: float = 0.0
    angle_k: float = 0.0
    layer_radii: tuple[float, ...] = ()  # explicit radii; empty: equally spaced (see above)
    thickness: float = 0.0  # solid sensors: charge-collecting thickness [cm]
    stereo_deg: float = 0.0  # drift wires: stereo angle; 0 = axial
    adc_per_kev: float | None = None  # gain; None: DigitizeConfig.adc_per_kev

    @property
    def pitch(self) -> float:
        return (self.r_max - self.r_min) / self.n_layers

    @property
    def radii(self) -> np.ndarray:
        if self.layer_radii:
            return np.asarray(self.layer_radii, dtype=float)
        return self.r_min + (np.arange(self.n_layers) + 0.5) * self.pitch

    @property
    def solid(self) -> bool:
        return self.readout in SOLID_READOUTS

    @property
    def charge_path(self) -> float:
        """Path [cm] at normal incidence in which the hit charge is made."""
        return self.thickness if self.solid else self.pitch


@dataclass(frozen=True)
class MaterialCylinder:
    """A thin cylinder of material (beam pipe, field cage, silicon layer): effects on crossing."""

    name: str
    r: float
    z_half: float
    x0_fraction: float  # thickness at normal incidence in radiation lengths
    material: str


@dataclass(frozen=True)
class MaterialDisk:
    """A thin disk at fixed z (central membrane)."""

    name: str
    z: float
    r_min: float
    r_max: float
    x0_fraction: float
    material: str


@dataclass(frozen=True)
class Volume:
    """A continuous medium (TPC gas) filling r_min < r < r_max, |z| < z_half."""

    name: str
    r_min: float
    r_max: float
    z_half: float
    material: str


@dataclass(frozen=True)
class Detector:
    name: str
    b_field_t: float  # uniform solenoid field along +z
    materials: tuple[Material, ...]
    modules: tuple[LayerModule, ...]  # ascending in radius, not overlapping
    cylinders: tuple[MaterialCylinder, ...] = ()
    disks: tuple[MaterialDisk, ...] = ()
    volumes: tuple[Volume, ...] = ()
    world_r: float = 80.0  # particles are stopped beyond (calorimeters are not simulated)
    world_z: float = 110.0
    extra: dict = field(default_factory=dict)
    source: str = ""  # the detector file it was read from
    sha256: str = ""  # of that file

    def material(self, name: str) -> Material:
        for m in self.materials:
            if m.name == name:
                return m
        raise KeyError(f"detector {self.name!r} has no material {name!r}")

    # ---- the shared geometry contract -------------------------------------------------
    @cached_property
    def layer_radii(self) -> np.ndarray:
        """Layer radii [cm] of every measurement layer, module by module (ascending)."""
        return np.concatenate([m.radii for m in self.modules])

    @cached_property
    def layer_module(self) -> np.ndarray:
        """Module index of every layer."""
        return np.concatenate([np.full(m.n_layers, i) for i, m in enumerate(self.modules)])

    @property
    def module_edges(self) -> list[list[float]]:
        """[[r_min, r_max], ...] of the modules [cm]."""
        return [[m.r_min, m.r_max] for m in self.modules]

    @property
    def subsystems(self) -> list[str]:
        """Subsystem names, inside out."""
        return list(dict.fromkeys(m.subsystem for m in self.modules))

    @property
    def z_half_length(self) -> float:
        """Largest |z| [cm] at which a hit can be recorded."""
        return max(m.z_max_abs for m in self.modules)

    @property
    def n_layers(self) -> int:
        return int(len(self.layer_radii))

    # ---- what the transport needs --------------------------------------------------------
    @cached_property
    def surfaces(self) -> dict:
        """Material and boundary cylinders sorted by radius (measurement layers are handled
        separately), padded with unreachable sentinels r[0] = -1 and r[-1] = inf.

        Keys: r, cylinder (material-cylinder index or -1), world (index of the world boundary).
        """
        rows = {}  # r -> cylinder index
        for v in self.volumes:  # boundaries, so that a step never straddles a medium change
            rows.setdefault(v.r_min, -1)
            rows.setdefault(v.r_max, -1)
        rows.setdefault(self.world_r, -1)
        for j, c in enumerate(self.cylinders):
            if rows.get(c.r, -1) != -1:
                raise ValueError(f"detector {self.name!r}: two material cylinders at r = {c.r}")
            rows[c.r] = j
        radii = sorted(rows)
        r = np.array([-1.0] + radii + [np.inf])
        cyl = np.array([-1] + [rows[x] for x in radii] + [-1], dtype=np.int64)
        world = int(np.searchsorted(r, self.world_r))
        return {"r": r, "cylinder": cyl, "world": world}

    def to_dict(self) -> dict:
        return asdict(self)
