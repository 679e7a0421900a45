"""Truth of the ep DIS tasks (``electron``, ``q2``): the scattered electron and Q2.

Scattered electron: the highest-energy generator-level (``parent_id == -1``) particle of the
lepton beam's species (pdg 11 for an e- beam) in the event's ``tracks`` list. Why this is the
right particle for the eic_ep / hera_ep facilities: neutral-current DIS keeps the beam lepton
(a photon/Z exchange, no charged current), PYTHIA runs with ``PDF:lepton = off`` and
``TimeShower:QEDshowerByL = off`` (no QED radiation off the lepton, so the scattered e- is one
final-state particle of beam-like energy: 18 GeV x (1 - y)), while the other generator-level
electrons (Dalitz and heavy-flavour decays) are soft. Detector bremsstrahlung changes the track
after production, not the ``tracks`` record (momentum at production), so the truth is the
generator's. The ``tracks`` list holds only particles with hits (and their ancestors); with
Q2 > 25 GeV^2 at 18 GeV the electron leaves at >= ~16 deg from the electron beam, inside the
ZEUS-like CTD (>= ~10 deg), so it is listed (tests/test_downstream_tasks.py checks simulated
events). Hits of the electron: ``hit_track_id == its track_id`` (its bremsstrahlung photons'
conversions are other tracks, not tagged).

Q2, electron method: Q2 = 2 E_e E'_e (1 + cos theta_e), E_e the lepton beam energy, E'_e and
theta_e the scattered electron's energy and polar angle measured from the proton direction. In
PYTHIA's lab frame (``Beams:frameType = 2``) beam A flies along +z and beam B along -z, so with
the electron as beam B (eic_ep, hera_ep) the proton is +z and cos theta_e = pz / |p|. E_e comes
from the facility's beam settings (``Beams:eA`` / ``Beams:eB``), read from the data set's
manifest (the record of what was simulated), else from the facility file of that name.

Events without a scattered electron are refused, naming the file and the event (not skipped):
they mean the data is not ep DIS (or lacks truth), and silently dropping them would leave a
test set that other rows of a table were not scored on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIS_TASKS = ("electron", "q2")
ELECTRON_MASS = 0.000511  # GeV
LEPTONS = (11, -11, 13, -13)


def lepton_beam(beams) -> dict | None:
    """{"pdg", "energy" [GeV], "direction" (+1: along +z)} of the lepton beam in PYTHIA beam
    settings, None when no beam is a lepton. Refuses a lepton-hadron collider that is not in
    the lab frame (frameType 2): the electron method needs each beam's own energy."""
    kv = {}
    for s in beams:
        key, _, value = s.partition("=")
        kv[key.strip()] = value.strip()
    for side, direction in (("A", 1), ("B", -1)):
        pdg = int(kv.get(f"Beams:id{side}", 0) or 0)
        if pdg in LEPTONS:
            if kv.get("Beams:frameType", "1") != "2":
                raise ValueError(f"lepton beam {side} (pdg {pdg}) without Beams:frameType = 2: "
                                 "no lab-frame beam energy for the electron method")
            if f"Beams:e{side}" not in kv:
                raise ValueError(f"lepton beam {side} (pdg {pdg}) has no Beams:e{side} setting")
            return {"pdg": pdg, "energy": float(kv[f"Beams:e{side}"]), "direction": direction}
    return None


def facility_lepton_beam(data_dir: str | Path) -> tuple[dict | None, str]:
    """(lepton beam, facility name) of a data set from its manifest; (None, "") when the
    manifest records no facility (imported data)."""
    from fm4npp.data.shards import read_manifest

    fac = (read_manifest(data_dir, missing_ok=True) or {}).get("facility") or {}
    if not fac:
        return None, ""
    beams = fac.get("beams")
    if beams is None:  # a manifest naming the facility only: its file says the rest
        from fm4npp.sim.facility import load_facility

        beams = load_facility(fac["name"]).beams
    return lepton_beam(beams), fac.get("name", "")


def scattered_electron(tracks, pdg: int = 11) -> int:
    """Index into ``tracks`` (dict of arrays, or a list of track dicts) of the scattered lepton
    (module docstring), -1 when there is none."""
    if not isinstance(tracks, dict):
        tracks = {k: np.asarray([t[k] for t in tracks]) for k in ("pdg", "parent_id", "px", "py", "pz")}
    cand = np.flatnonzero((np.asarray(tracks["pdg"]) == pdg) & (np.asarray(tracks["parent_id"]) == -1))
    if not cand.size:
        return -1
    p2 = sum(np.asarray(tracks[c], np.float64)[cand] ** 2 for c in ("px", "py", "pz"))
    return int(cand[np.argmax(p2)])  # E = sqrt(p^2 + m^2) grows with |p|


def q2_electron_method(e_beam: float, px: float, py: float, pz: float, direction: int = -1) -> float:
    """Q2 [GeV^2] = 2 E_e E' (1 + cos theta), theta from the proton, which flies opposite the
    lepton beam (``direction`` of the lepton beam: -1 = along -z, the eic_ep / hera_ep case)."""
    p = float(np.sqrt(px * px + py * py + pz * pz))
    e = float(np.sqrt(p * p + ELECTRON_MASS ** 2))
    cos_theta = -direction * pz / p if p > 0 else -1.0
    return 2.0 * e_beam * e * (1.0 + cos_theta)


def attach_dis_labels(data_dir: str | Path, events: list[dict], need_q2: bool) -> None:
    """Give serialized events (in place) their per-point ``electron`` labels (1 = a hit of the
    scattered electron) and, with ``need_q2``, the event's ``log10_q2``, from the data set's
    ``tracks`` column. Events that already carry them are left alone."""
    from fm4npp.data.io import iter_tables

    todo = {int(e["event_id"]): e for e in events if "electron" not in e or (need_q2 and "log10_q2" not in e)}
    if not todo:
        return
    beam, facility = facility_lepton_beam(data_dir)
    # a known facility without a lepton beam (p+p, e+e-) has no scattered electron; imported
    # data without a facility record is tagged by the rule alone, but has no E_e for Q2
    if beam is None and (facility or need_q2):
        what = f"facility {facility} has no lepton beam" if facility else "its manifest records no facility"
        raise ValueError(f"{data_dir}: the electron / q2 tasks need ep DIS data, but {what}"
                         + (" (q2 needs the lepton beam energy)" if need_q2 else ""))
    pdg = beam["pdg"] if beam else 11
    for path, _, table in iter_tables(data_dir, ["event_id", "tracks"], check=False, empty="keep"):
        ids = table.column("event_id").to_numpy()
        col = table.column("tracks").combine_chunks()
        offsets = col.offsets.to_numpy()
        flat = col.flatten()
        fields = {k: flat.field(k).to_numpy(zero_copy_only=False)
                  for k in ("track_id", "pdg", "parent_id", "px", "py", "pz")}
        for row, eid in enumerate(ids):
            ev = todo.pop(int(eid), None)
            if ev is None:
                continue
            tr = {k: v[offsets[row]:offsets[row + 1]] for k, v in fields.items()}
            j = scattered_electron(tr, pdg)
            if j < 0:
                raise ValueError(f"{path}: event {int(eid)}: no generator-level lepton of pdg {pdg} "
                                 f"(parent_id -1) among its {len(tr['pdg'])} tracks: the electron / q2 "
                                 "tasks need the scattered electron (ep DIS data with truth tracks)")
            ev["electron"] = (np.asarray(ev["track_id"]) == tr["track_id"][j]).astype(np.int64)
            if need_q2:
                q2 = q2_electron_method(beam["energy"], tr["px"][j], tr["py"][j], tr["pz"][j], beam["direction"])
                if not q2 > 0:
                    raise ValueError(f"{path}: event {int(eid)}: Q2 = {q2} GeV^2 from the scattered "
                                     "electron (not positive: no log10)")
                ev["log10_q2"] = float(np.log10(q2))
    if todo:
        raise ValueError(f"{data_dir}: events {sorted(todo)[:5]} not found in the data set's tracks")


def ensure_task_labels(cfg, *event_lists) -> None:
    """The DIS tasks' labels on every event of these lists (a no-op for the other tasks)."""
    if cfg.task not in DIS_TASKS:
        return
    events = [e for evs in event_lists for e in (evs or [])]
    key = "log10_q2" if cfg.task == "q2" else "electron"
    if not cfg.data:
        if all(key in e for e in events):
            return
        raise ValueError(f"task {cfg.task}: events handed in without {key!r} labels and no data "
                         "dir to derive them from")
    attach_dis_labels(cfg.data, events, need_q2=cfg.task == "q2")
