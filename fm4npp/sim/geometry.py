"""Detectors as data: cylindrical measurement layers, material cylinders/disks, gas volumes.

The transport (:mod:`fm4npp.sim.transport`) only reads a :class:`Detector`; a silicon tracker
or another TPC is a new ``Detector`` instance (e.g. a ``LayerModule`` of 3 thin layers plus a
``MaterialCylinder`` of silicon at each radius), never a change of the transport code.
Units: cm, tesla, g/cm^3, eV for mean excitation energies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np


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
    """A group of equally spaced measurement layers (pad rows) between r_min and r_max.

    Layer i sits at r_min + (i + 1/2) (r_max - r_min) / n_layers; only phi and z are measured.
    Resolutions: sigma^2 = sigma_0^2 + sigma_drift^2 * drift / max_drift + (k * L * tan(angle))^2,
    L = pad-row length, angle = crossing angle (r-phi) or dip angle (z) to the radial direction.
    """

    name: str
    r_min: float
    r_max: float
    n_layers: int
    z_min_abs: float  # no hits at |z| below (central membrane)
    z_max_abs: float  # no hits at |z| above (end of drift)
    n_sectors: int = 12
    active_phi_fraction: float = 1.0  # hits in the gaps between sectors are lost
    sector_phi0: float = 0.0  # phi of the first sector boundary [rad]
    sigma_rphi0: float = 0.011
    sigma_rphi_drift: float = 0.0123
    sigma_z0: float = 0.037
    sigma_z_drift: float = 0.0365
    angle_k: float = 0.15
    sensitive: str = "gas"  # material whose ionisation makes the hit charge

    @property
    def pitch(self) -> float:
        return (self.r_max - self.r_min) / self.n_layers

    @property
    def radii(self) -> np.ndarray:
        return self.r_min + (np.arange(self.n_layers) + 0.5) * self.pitch


@dataclass(frozen=True)
class MaterialCylinder:
    """A thin cylinder of material (beam pipe, field cage): effects applied on crossing."""

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
    modules: tuple[LayerModule, ...]
    cylinders: tuple[MaterialCylinder, ...] = ()
    disks: tuple[MaterialDisk, ...] = ()
    volumes: tuple[Volume, ...] = ()
    world_r: float = 80.0  # particles are stopped beyond (calorimeters are not simulated)
    world_z: float = 110.0
    extra: dict = field(default_factory=dict)

    def material(self, name: str) -> Material:
        for m in self.materials:
            if m.name == name:
                return m
        raise KeyError(f"detector {self.name!r} has no material {name!r}")

    # ---- the shared geometry contract -------------------------------------------------
    @cached_property
    def layer_radii(self) -> np.ndarray:
        """Layer-centre radii [cm] of every measurement layer, module by module (ascending)."""
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


# ---- materials (PDG "Atomic and nuclear properties"; gas mix from its components) ---------
def _gas_mix() -> Material:
    # Ar:CF4:iC4H10 75:20:5 at 20 C, 1 atm. C from the plasma energy of the mix, a from the
    # continuity of delta at x0 (argon's x0, x1, k).
    rho, za, i_ev = 2.104e-3, 0.468, 166.0
    hw = 28.816 * np.sqrt(rho * za)
    c = 2 * np.log(i_ev / hw) + 1
    x0, x1, k = 1.7635, 4.4855, 2.9618
    a = (c - 2 * np.log(10) * x0) / (x1 - x0) ** k
    return Material("gas", rho, 11200 * rho, za, i_ev, (float(c), x0, x1, float(a), k, 0.0))


BERYLLIUM = Material("Be", 1.848, 65.19, 0.44384, 63.7, (2.7847, 0.0592, 1.6922, 0.80392, 2.4339, 0.14))
KAPTON = Material("kapton", 1.42, 40.58, 0.51264, 79.6, (3.3497, 0.1509, 2.5631, 0.15972, 3.1921, 0.0))


def sphenix_tpc() -> Detector:
    """The sPHENIX TPC (shared/notes/physics.md): 48 pad-row layers in 3 modules of 16,
    1.4 T, 12 sectors with gaps, central membrane, beam pipe and field-cage material."""
    drift = 102.325
    cm_half = 0.28  # central membrane: no hits at |z| < 0.28 cm
    zmax = cm_half + drift
    common = dict(z_min_abs=cm_half, z_max_abs=zmax, n_sectors=12, sector_phi0=0.0)
    modules = (
        LayerModule("R1", 31.105, 40.249, 16, active_phi_fraction=0.960, **common),
        LayerModule("R2", 41.153, 57.475, 16, active_phi_fraction=0.972, **common),
        LayerModule("R3", 58.367, 75.911, 16, active_phi_fraction=0.972, **common),
    )
    return Detector(
        name="sphenix_tpc",
        b_field_t=1.4,
        materials=(_gas_mix(), BERYLLIUM, KAPTON),
        modules=modules,
        cylinders=(
            MaterialCylinder("beam_pipe", 2.0, 110.0, 0.0022, "Be"),
            MaterialCylinder("inner_field_cage", 20.8, 105.0, 0.018, "kapton"),
        ),
        disks=(MaterialDisk("central_membrane", 0.0, 20.8, 78.0, 0.003, "kapton"),),
        volumes=(Volume("tpc_gas", 21.6, 76.4, 105.0, "gas"),),
        world_r=78.0,
        world_z=110.0,
    )


DETECTORS = {"sphenix_tpc": sphenix_tpc}


def get_detector(name: str) -> Detector:
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(DETECTORS)}") from None
