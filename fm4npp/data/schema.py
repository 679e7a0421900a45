"""The event data contract: one Parquet row per collision event.

Units: cm for positions, GeV/c for momenta, ``hit_energy`` in ADC-like units (the public
TPCpp-10M scale: mean ~250). Bump ``SCHEMA_VERSION`` on any change of columns or meaning;
readers refuse a version they do not know.

Every file is self-describing: its Arrow schema metadata carries the schema version, the
units (``fm4npp.units``), the PID class names (``fm4npp.pid_classes``), the noise
definition (``fm4npp.noise``) and the subsystem names (``fm4npp.subsystems``), the last four
as JSON. No field can be null.

Versions: 3 (current) adds ``hit_subsystem``, ``hit_sigma_rphi`` and ``hit_sigma_z`` (several
detectors, silicon and drift chambers) and the subsystem names (``fm4npp.subsystems``) to the
metadata; 2 declared every field non-nullable, had no subsystem columns (every hit is a TPC
hit, :data:`PRE_V3_SUBSYSTEM`) and no per-point resolution; 1 had version 2's columns declared
nullable and no units metadata. Readers accept all three (a null in a version-1 file is a
content problem, found by the checks); older files are read without the v3 columns.

Columns
-------
event_id       int64            unique within a data set (seed block * block size + index)
hit_x/y/z      list<float32>    spacepoint position [cm], at the layer-centre radius
hit_energy     list<float32>    deposited charge of the cluster [ADC-like units]
hit_track_id   list<int32>      truth track that made the hit (index into ``tracks.track_id``)
hit_pdg        list<int32>      PDG id of that track (0: unknown)
hit_pid_class  list<int8>       PID class, see ``PID_CLASSES``
hit_noise      list<bool>       hit from a particle with p < ``NOISE_P_MAX`` at production
hit_subsystem  list<int8>       subsystem that measured the hit, see ``SUBSYSTEMS`` (v3)
hit_sigma_rphi list<float32>    resolution of the r-phi coordinate of this point [cm] (v3)
hit_sigma_z    list<float32>    resolution of z [cm] (v3); +inf: z not measured (axial wire; the
                                hit's z is then 0, the wire centre); NaN: unknown (imported data)
tracks         list<struct>     per truth track: track_id int32, pdg int32, charge int8,
                                px/py/pz float32 [GeV/c] and vx/vy/vz float32 [cm] at production,
                                parent_id int32 (-1 for generator particles), is_primary bool
"""

from __future__ import annotations

import json

import pyarrow as pa

SCHEMA_VERSION = 3
SCHEMA_VERSION_KEY = b"fm4npp.schema_version"  # file metadata key of the version
READABLE_SCHEMA_VERSIONS = (1, 2, 3)

# Subsystem ids of ``hit_subsystem``: one table for every detector, so an id means the same in
# every data set (mixing data sets, the model's subsystem feature). A detector file names its
# subsystems with these names; a new kind of subsystem is a new line here (a schema change).
SUBSYSTEMS = {0: "tpc", 1: "mvtx", 2: "intt", 3: "vdet", 4: "itc", 5: "ctd"}
SUBSYSTEM_IDS = {name: i for i, name in SUBSYSTEMS.items()}
PRE_V3_SUBSYSTEM = "tpc"  # files before version 3 hold TPC hits only (sPHENIX sim, TPCpp-10M)
# Columns that version 3 added, so files of older versions lack them.
V3_COLUMNS = ("hit_subsystem", "hit_sigma_rphi", "hit_sigma_z")

# PID classes of the paper / TPCpp-10M.
PID_CLASSES = {0: "other", 1: "pi+-", 2: "K+-", 3: "p/pbar", 4: "e+-"}
N_PID_CLASSES = len(PID_CLASSES)
NOISE_P_MAX = 0.060  # GeV/c: hits of particles produced below this momentum are "noise"
NOISE_DEFINITION = (f"hit_noise is true for hits of particles produced with momentum "
                    f"p < {NOISE_P_MAX * 1000:g} MeV/c")
UNITS = {
    "hit_x": "cm", "hit_y": "cm", "hit_z": "cm",
    "hit_energy": "ADC-like units (TPCpp-10M scale, mean ~250; each subsystem's gain puts a "
                  "minimum-ionising particle at normal incidence near that scale)",
    "hit_sigma_rphi": "cm", "hit_sigma_z": "cm (+inf: not measured, NaN: unknown)",
    "tracks.px": "GeV/c", "tracks.py": "GeV/c", "tracks.pz": "GeV/c",
    "tracks.vx": "cm", "tracks.vy": "cm", "tracks.vz": "cm",
    "tracks.charge": "e",
}


def pid_class_of(pdg):
    """PID class for a PDG id (works elementwise on numpy integer arrays)."""
    import numpy as np

    a = np.abs(np.asarray(pdg))
    out = np.zeros(a.shape, dtype=np.int8)
    out[a == 211] = 1
    out[a == 321] = 2
    out[a == 2212] = 3
    out[a == 11] = 4
    return out


def _required(name: str, typ: pa.DataType) -> pa.Field:
    return pa.field(name, typ, nullable=False)


def _list(typ: pa.DataType) -> pa.ListType:
    return pa.list_(_required("item", typ))


TRACK_TYPE = pa.struct([
    _required("track_id", pa.int32()),
    _required("pdg", pa.int32()),
    _required("charge", pa.int8()),
    _required("px", pa.float32()),
    _required("py", pa.float32()),
    _required("pz", pa.float32()),
    _required("vx", pa.float32()),
    _required("vy", pa.float32()),
    _required("vz", pa.float32()),
    _required("parent_id", pa.int32()),
    _required("is_primary", pa.bool_()),
])

HIT_COLUMNS = {
    "hit_x": pa.float32(),
    "hit_y": pa.float32(),
    "hit_z": pa.float32(),
    "hit_energy": pa.float32(),
    "hit_track_id": pa.int32(),
    "hit_pdg": pa.int32(),
    "hit_pid_class": pa.int8(),
    "hit_noise": pa.bool_(),
    "hit_subsystem": pa.int8(),
    "hit_sigma_rphi": pa.float32(),
    "hit_sigma_z": pa.float32(),
}

SCHEMA_METADATA = {
    SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(),
    b"fm4npp.units": json.dumps(UNITS).encode(),
    b"fm4npp.pid_classes": json.dumps({str(k): v for k, v in PID_CLASSES.items()}).encode(),
    b"fm4npp.noise": json.dumps({"definition": NOISE_DEFINITION, "p_max_GeV": NOISE_P_MAX}).encode(),
    b"fm4npp.subsystems": json.dumps({str(k): v for k, v in SUBSYSTEMS.items()}).encode(),
}

EVENT_SCHEMA = pa.schema(
    [_required("event_id", pa.int64())]
    + [_required(name, _list(t)) for name, t in HIT_COLUMNS.items()]
    + [_required("tracks", _list(TRACK_TYPE))],
    metadata=SCHEMA_METADATA,
)


def nullable(typ: pa.DataType) -> pa.DataType:
    """``typ`` with every nested field nullable (how schema version 1 declared it)."""
    if pa.types.is_list(typ):
        return pa.list_(nullable(typ.value_type))
    if pa.types.is_struct(typ):
        return pa.struct([pa.field(f.name, nullable(f.type)) for f in typ])
    return typ
