"""Typed configuration of the event simulator; every default lives here.

Units: cm, GeV, GeV/c, tesla, ns. The detector and the facility are not configured here: they
are data files (fm4npp/sim/detectors/, fm4npp/sim/facilities/), chosen by name or path with
``SimConfig.detector`` and ``GeneratorConfig.facility``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


# The defaults of a run: today's sPHENIX TPC at RHIC p+p 200 GeV (files of these names in
# fm4npp/sim/detectors/ and fm4npp/sim/facilities/).
DEFAULT_DETECTOR = "sphenix_tpc"
DEFAULT_FACILITY = "rhic_pp200"


@dataclass(frozen=True)
class GeneratorConfig:
    """PYTHIA 8 for one facility (beams, tune, process and beam spot: its facility file)."""

    facility: str = DEFAULT_FACILITY  # name in fm4npp/sim/facilities/ or a path to a .toml file
    extra: tuple[str, ...] = ()  # further PYTHIA settings, after the facility's
    # Generator particles produced farther than this from the collision vertex (weak-decay
    # daughters) are secondaries; their decayed mother is stored as their parent track.
    primary_max_displacement_cm: float = 0.1
    # The MPI initialisation (5 s) is computed once per settings and reused from this file
    # cache by every block (0.2 s); None = ~/.cache/fm4npp/pythia.
    init_cache_dir: str | None = None


@dataclass(frozen=True)
class TransportConfig:
    """Vectorised transport of charged particles and photons through a Detector."""

    # Physics list (fm4npp/sim/physics_list.py): "baseline" = the processes below as they are;
    # "extended" adds loopers followed until they stop or leave, Compton scattering,
    # photo-absorption, energy-dependent pair production and hadronic absorption with
    # nuclear fragments.
    physics: str = "baseline"
    multiple_scattering: bool = True
    energy_loss: bool = True
    decays_in_flight: bool = True
    conversions: bool = True
    delta_rays: bool = True
    delta_t_min_gev: float = 10e-6  # delta electrons above this kinetic energy are produced (gas)
    # In thin solid cylinders (beam pipe, field cage) softer deltas are absorbed where they are
    # made (range of 1 MeV in kapton ~ 3 mm); only harder ones can reach a measurement layer.
    delta_t_min_solid_gev: float = 1e-3
    max_step_cm: float = 10.0  # longest 3D step (scattering/energy loss applied per step)
    max_eloss_fraction: float = 0.2  # a step loses at most this fraction of kinetic energy
    t_stop_gev: float = 5e-6  # particles are stopped below this kinetic energy
    max_turns: float = 8.0  # loopers: stop after this many full turns in the transverse plane
    # Soft electrons (deltas) curl in place: their later turns revisit the same pad-row spots
    # (merged into the same clusters), so they are followed for fewer turns.
    soft_p_gev: float = 0.005
    soft_max_turns: float = 2.0
    max_crossings: int = 600  # per particle, all surfaces together (safety net)
    max_generations: int = 4  # primaries = 0; deltas/decays/conversions of them = 1, ...
    # Highland's log term is evaluated with at least this x/X0, so that summing many thin gas
    # steps does not underestimate the total scattering angle.
    highland_min_x0: float = 1e-3


@dataclass(frozen=True)
class DigitizeConfig:
    """Spacepoints from layer crossings: acceptance, merging, smearing, charge."""

    smear: bool = True
    # Crossings of one track in one layer closer than this (r-phi, z) are one cluster
    # (curling delta electrons, tangent loopers).
    merge_rphi_cm: float = 0.5
    merge_z_cm: float = 1.0
    # Ionisation: primary clusters with a 1/E^2 energy spectrum between these limits
    # (upper = delta_t_min: harder deltas are explicit particles).
    cluster_e_min_gev: float = 15e-9
    adc_per_kev: float = 59.0  # gain: TPCpp-10M-like scale, mean hit charge ~250
    adc_threshold: float = 20.0  # zero suppression
    adc_max: float = 6250.0  # saturation
    max_path_factor: float = 6.0  # cluster path length is capped at this many pad-row lengths


@dataclass(frozen=True)
class SimConfig:
    """One `fm4npp simulate` run: N events from seed S into Parquet shards."""

    events: int = 1000
    seed: int = 1
    events_per_shard: int = 1000
    events_per_batch: int = 1000  # events transported together (vectorisation width)
    workers: int = 1
    detector: str = DEFAULT_DETECTOR  # name in fm4npp/sim/detectors/ or a path to a .toml file
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    digitize: DigitizeConfig = field(default_factory=DigitizeConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def physics_dict(self) -> dict:
        """The part that determines the content of a shard (resume refuses a mismatch): the
        settings, and the detector and facility files by name and content hash."""
        from fm4npp.sim.detector_files import load_detector
        from fm4npp.sim.facility import load_facility

        d = self.to_dict()
        for k in ("events", "workers"):
            d.pop(k)
        d["generator"].pop("init_cache_dir")
        # the baseline list leaves the key of data sets made before the switch existed unchanged
        if d["transport"]["physics"] == "baseline":
            d["transport"].pop("physics")
        det, fac = load_detector(self.detector), load_facility(self.generator.facility)
        d["files"] = {"detector": {"name": det.name, "sha256": det.sha256},
                      "facility": {"name": fac.name, "sha256": fac.sha256}}
        return d
