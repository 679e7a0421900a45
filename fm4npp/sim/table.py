"""Spacepoints and the truth registry of a batch -> the Arrow table of events (EVENT_SCHEMA)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fm4npp.data.schema import EVENT_SCHEMA, NOISE_P_MAX, TRACK_TYPE, pid_class_of


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
        "hit_subsystem": _list(h_off, hits["subsystem"][horder].astype(np.int8), pa.int8()),
        "hit_sigma_rphi": _list(h_off, hits["sigma_rphi"][horder].astype(np.float32), pa.float32()),
        "hit_sigma_z": _list(h_off, hits["sigma_z"][horder].astype(np.float32), pa.float32()),
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
