"""Facility files (TOML) -> :class:`Facility`: a collider's PYTHIA beam block and its beam spot.

Layout (fm4npp/sim/facilities/*.toml are examples)::

    name, description
    beams    = ["Beams:idA = ...", ...]   PYTHIA beam settings (frame, particles, energies)
    tune     = [...]                      tune settings (may be empty)
    process  = [...]                      the processes switched on, decay choices
    reuse_mpi_init = true | false         cache PYTHIA's multiparton-interaction tables (hadron
                                          beams: a 5 s init) in a file shared by every block
    [beam_spot]  sigma_x, sigma_y, sigma_z   Gaussian collision-vertex spread [cm]

With ``Beams:frameType = 2`` (asymmetric ep beams) PYTHIA generates in the lab frame: beam A
along +z, beam B along -z, each with its own energy, so no boost is applied afterwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fm4npp.sim.spec_files import POSITIVE, Table, find, read

# Settings every facility gets: PYTHIA's banner and progress lines off.
QUIET = ("Print:quiet = on", "Next:numberCount = 0")


@dataclass(frozen=True)
class Facility:
    name: str
    description: str
    beams: tuple[str, ...]
    tune: tuple[str, ...]
    process: tuple[str, ...]
    reuse_mpi_init: bool
    beam_spot_cm: tuple[float, float, float]  # sigma_x, sigma_y, sigma_z of the vertex
    source: str = ""
    sha256: str = ""

    def settings(self) -> list[str]:
        return list(self.beams) + list(QUIET) + list(self.tune) + list(self.process)

    def to_dict(self) -> dict:
        return asdict(self)


def load_facility(name_or_path: str) -> Facility:
    """The Facility of a shipped name (fm4npp/sim/facilities/<name>.toml) or of a file path."""
    path = find(name_or_path, "facilities")
    doc, digest = read(path)
    t = Table(path, "", doc)
    beams = t.strings("beams")
    if not any(s.replace(" ", "").startswith(("Beams:idA=", "Beams:idB=")) for s in beams):
        raise t.error("beams", "must set the beam particles (Beams:idA, Beams:idB)")
    for key in ("beams", "tune", "process"):
        bad = [s for s in t.strings(key, ()) if "=" not in s]
        if bad:
            raise t.error(key, f"{bad[0]!r} is not a PYTHIA 'Key = value' setting")
    spot = Table(path, "beam_spot", t.get("beam_spot", dict))
    sigmas = tuple(spot.get(k, float, check=POSITIVE[0], why=POSITIVE[1]) for k in ("sigma_x", "sigma_y", "sigma_z"))
    spot.done()
    fac = Facility(name=t.get("name", str), description=t.get("description", str, ""), beams=beams,
                   tune=t.strings("tune", ()), process=t.strings("process"),
                   reuse_mpi_init=t.get("reuse_mpi_init", bool), beam_spot_cm=sigmas,
                   source=str(path), sha256=digest)
    t.done()
    return fac
