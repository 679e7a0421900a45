"""The event data contract: one Parquet row per collision event.

Units: cm for positions, GeV/c for momenta, ``hit_energy`` in ADC-like units (the public
TPCpp-10M scale: mean ~250). Bump ``SCHEMA_VERSION`` on any change of columns or meaning;
readers refuse a version they do not know.

Columns
-------
event_id       int64            unique within a data set (seed block * block size + index)
hit_x/y/z      list<float32>    spacepoint position [cm], at the layer-centre radius
hit_energy     list<float32>    deposited charge of the cluster [ADC-like units]
hit_track_id   list<int32>      truth track that made the hit (index into ``tracks.track_id``)
hit_pdg        list<int32>      PDG id of that track
hit_pid_class  list<int8>       PID class, see ``PID_CLASSES``
hit_noise      list<bool>       hit from a particle with p < ``NOISE_P_MAX`` at production
tracks         list<struct>     per truth track: track_id int32, pdg int32, charge int8,
                                px/py/pz float32 [GeV/c] and vx/vy/vz float32 [cm] at production,
                                parent_id int32 (-1 for generator particles), is_primary bool
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

# PID classes of the paper / TPCpp-10M.
PID_CLASSES = {0: "other", 1: "pi+-", 2: "K+-", 3: "p/pbar", 4: "e+-"}
N_PID_CLASSES = len(PID_CLASSES)
NOISE_P_MAX = 0.060  # GeV/c: hits of particles produced below this momentum are "noise"


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


TRACK_TYPE = pa.struct(
    [
        ("track_id", pa.int32()),
        ("pdg", pa.int32()),
        ("charge", pa.int8()),
        ("px", pa.float32()),
        ("py", pa.float32()),
        ("pz", pa.float32()),
        ("vx", pa.float32()),
        ("vy", pa.float32()),
        ("vz", pa.float32()),
        ("parent_id", pa.int32()),
        ("is_primary", pa.bool_()),
    ]
)

HIT_COLUMNS = {
    "hit_x": pa.float32(),
    "hit_y": pa.float32(),
    "hit_z": pa.float32(),
    "hit_energy": pa.float32(),
    "hit_track_id": pa.int32(),
    "hit_pdg": pa.int32(),
    "hit_pid_class": pa.int8(),
    "hit_noise": pa.bool_(),
}

EVENT_SCHEMA = pa.schema(
    [("event_id", pa.int64())]
    + [(name, pa.list_(t)) for name, t in HIT_COLUMNS.items()]
    + [("tracks", pa.list_(TRACK_TYPE))],
    metadata={b"fm4npp.schema_version": str(SCHEMA_VERSION).encode()},
)
