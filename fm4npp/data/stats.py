"""Physics numbers of an event data set, with the expectations they are checked against.

:func:`physics_summary` gives the numbers of ``fm4npp data report`` (report.json);
:func:`collect` gives the per-hit / per-track / per-event arrays behind them (also used for
the figures). Units: cm, GeV/c. Expectations come from ``shared/notes/physics.md`` and the
FM4NPP paper (appendix A).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fm4npp.data.io import DataError, iter_tables
from fm4npp.data.shards import read_manifest
from fm4npp.data.schema import EVENT_SCHEMA, PID_CLASSES

DEDX_TRUNCATION = 0.70  # keep the lowest 70 % of cluster charges per track (sPHENIX reco)
ETA_CENTRAL = 0.5
PT_MIN_HITS_PER_TRACK = 0.2  # GeV/c
N_LAYERS = 48

EXPECTATIONS = {
    "dnch_deta_eta05": "2.39 (PYTHIA 8 Detroit, inelastic; 2.84 NSD) -- physics.md",
    "hits_per_track_pt02_eta05_mean": f"~{N_LAYERS} minus sector gaps (96-97 % active phi) ~= 46.5 -- physics.md",
    "hits_per_event_mean": "hundreds to thousands (FM4NPP appendix A, Fig. 10)",
    "hits_per_event_p99": "<~ 3200 for most events (TPCpp-10M loader drops events above 3200 points)",
    "tracks_per_event_mean": "under ten up to ~100 truth tracks per event (FM4NPP appendix A, Fig. 10)",
    "hit_r_range_cm": "48 layer radii within 31.1-75.9 cm",
    "hit_abs_z_max_cm": "<= 102.3 cm (max drift), no hits at |z| < 0.28 cm (central membrane)",
    "noise_hit_fraction": "hits of particles with p < 60 MeV/c at production (delta electrons, conversions)",
}


@dataclass
class Collected:
    """Flat arrays over the events read (hits, tracks) plus per-event counts."""

    n_events: int
    hits_per_event: np.ndarray  # (E,)
    tracks_per_event: np.ndarray  # (E,) tracks listed
    hit_r: np.ndarray  # (H,) cm
    hit_z: np.ndarray  # (H,) cm
    hit_phi: np.ndarray  # (H,) rad
    hit_pid_class: np.ndarray  # (H,)
    hit_noise: np.ndarray  # (H,)
    track_pdg: np.ndarray  # (T,)
    track_charge: np.ndarray
    track_primary: np.ndarray
    track_pt: np.ndarray  # GeV/c at production
    track_p: np.ndarray
    track_eta: np.ndarray  # nan for pT = 0
    track_vr: np.ndarray  # production radius, cm
    track_nhits: np.ndarray
    track_dedx: np.ndarray  # truncated-mean hit_energy (nan without hits)
    counts: dict  # manifest "counts" of the data set ({} if none): generated_events, generator_nch_eta05


def _flat(table: pa.Table, name: str) -> tuple[np.ndarray, pa.Array]:
    arr = table.column(name).combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    return lengths, arr.flatten()


def truncated_mean(values: np.ndarray, groups: np.ndarray, n_groups: int,
                   keep: float = DEDX_TRUNCATION) -> np.ndarray:
    """Per group, the mean of the lowest ``keep`` fraction (at least one) of ``values``."""
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(g)) - starts[g]
    n_keep = np.maximum(1, np.floor(keep * counts + 0.5)).astype(np.int64)
    sel = rank < n_keep[g]
    sums = np.bincount(g[sel], weights=v[sel], minlength=n_groups)
    kept = np.bincount(g[sel], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kept > 0, sums / np.maximum(kept, 1), np.nan)


def _collect_table(table: pa.Table) -> dict[str, np.ndarray]:
    nh, _ = _flat(table, "hit_x")
    nt, tracks = _flat(table, "tracks")
    hit_row = np.repeat(np.arange(table.num_rows), nh)
    trk_row = np.repeat(np.arange(table.num_rows), nt)
    h = {c: _flat(table, c)[1].to_numpy(zero_copy_only=False) for c in
         ("hit_x", "hit_y", "hit_z", "hit_energy", "hit_track_id", "hit_pid_class", "hit_noise")}
    t = {f: tracks.field(f).to_numpy(zero_copy_only=False) for f in
         ("track_id", "pdg", "charge", "px", "py", "pz", "vx", "vy", "is_primary")}
    # (row, track id) keys map each hit to its track with one searchsorted.
    tkey = trk_row * (1 << 33) + t["track_id"].astype(np.int64)
    hkey = hit_row * (1 << 33) + h["hit_track_id"].astype(np.int64)
    order = np.argsort(tkey)
    hit_track = order[np.searchsorted(tkey[order], hkey)]  # checked on reading: every hit has its track
    ntrk = len(tkey)
    nhits = np.bincount(hit_track, minlength=ntrk)
    dedx = truncated_mean(h["hit_energy"].astype(np.float64), hit_track, ntrk)
    px, py, pz = (t[k].astype(np.float64) for k in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1)), np.nan)
    x, y = h["hit_x"].astype(np.float64), h["hit_y"].astype(np.float64)
    return {
        "hits_per_event": nh, "tracks_per_event": nt,
        "hit_r": np.hypot(x, y), "hit_z": h["hit_z"].astype(np.float64), "hit_phi": np.arctan2(y, x),
        "hit_pid_class": h["hit_pid_class"].astype(np.int8), "hit_noise": h["hit_noise"].astype(bool),
        "track_pdg": t["pdg"], "track_charge": t["charge"], "track_primary": t["is_primary"].astype(bool),
        "track_pt": pt, "track_p": np.sqrt(pt**2 + pz**2), "track_eta": eta,
        "track_vr": np.hypot(t["vx"].astype(np.float64), t["vy"].astype(np.float64)),
        "track_nhits": nhits, "track_dedx": dedx,
    }


def collect(path_or_dir: str | Path, max_events: int | None = None, *, empty: str = "keep") -> Collected:
    """Read (checked) events and gather the arrays behind the report."""
    parts: list[dict] = []
    n = 0
    cols = ["event_id", "hit_x", "hit_y", "hit_z", "hit_energy", "hit_track_id", "hit_pid_class", "hit_noise",
            "tracks"]
    for _, _, table in iter_tables(path_or_dir, cols, empty=empty):
        if max_events is not None and n + table.num_rows > max_events:
            table = table.slice(0, max_events - n)
        if table.num_rows:
            parts.append(_collect_table(table))
            n += table.num_rows
        if max_events is not None and n >= max_events:
            break
    if not parts:
        parts = [_collect_table(EVENT_SCHEMA.empty_table().select(cols))]
    fields = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Collected(n_events=n, **fields, counts=_manifest_counts(path_or_dir))


def _manifest_counts(path_or_dir) -> dict:
    path = Path(path_or_dir)
    try:
        counts = read_manifest(path if path.is_dir() else path.parent).get("counts")
    except DataError:
        return {}
    return counts if isinstance(counts, dict) else {}


def generated_per_written(c: Collected) -> float:
    """Generated events per written one: the simulator does not write events without hits."""
    gen, written = c.counts.get("generated_events"), c.counts.get("events")
    if isinstance(gen, int) and isinstance(written, int) and written > 0 and gen >= written:
        return gen / written
    return 1.0


def summary_from(c: Collected) -> dict:
    """The report numbers from collected arrays (see :func:`physics_summary`)."""
    n = max(c.n_events, 1)
    charged_primary = c.track_primary & (c.track_charge != 0)
    central = np.abs(np.nan_to_num(c.track_eta, nan=99.0)) < ETA_CENTRAL
    sel = charged_primary & central & (c.track_pt > PT_MIN_HITS_PER_TRACK) & (c.track_nhits > 0)
    n_hits = max(len(c.hit_r), 1)
    pid_frac = {name: float(np.sum(c.hit_pid_class == k) / n_hits) for k, name in PID_CLASSES.items()}
    hpe = c.hits_per_event
    return {
        "n_events": int(c.n_events),
        **_dnch_deta(c, int(np.sum(charged_primary & central))),
        "hits_per_event_mean": float(hpe.mean()) if len(hpe) else 0.0,
        "hits_per_event_p99": float(np.percentile(hpe, 99)) if len(hpe) else 0.0,
        "hits_per_event_max": int(hpe.max()) if len(hpe) else 0,
        "empty_event_fraction": float(np.mean(hpe == 0)) if len(hpe) else 0.0,
        "tracks_per_event_mean": float(c.tracks_per_event.mean()) if len(hpe) else 0.0,
        "tracks_with_hits_per_event_mean": float(np.sum(c.track_nhits > 0) / n),
        "primary_charged_tracks_per_event_mean": float(np.sum(charged_primary) / n),
        "pid_class_hit_fractions": pid_frac,
        "noise_hit_fraction": float(c.hit_noise.mean()) if len(c.hit_noise) else 0.0,
        "hits_per_track_pt02_eta05_mean": float(c.track_nhits[sel].mean()) if sel.any() else None,
        "hits_per_track_pt02_eta05_n_tracks": int(sel.sum()),
        "hit_r_range_cm": [float(c.hit_r.min()), float(c.hit_r.max())] if len(c.hit_r) else None,
        "hit_abs_z_max_cm": float(np.abs(c.hit_z).max()) if len(c.hit_z) else None,
        "hit_abs_z_min_cm": float(np.abs(c.hit_z).min()) if len(c.hit_z) else None,
        "distinct_hit_radii_cm": int(len(np.unique(np.round(c.hit_r, 1)))) if len(c.hit_r) else 0,
    }


def _dnch_deta(c: Collected, n_stored: int) -> dict:
    """dNch/deta at |eta| < 0.5 per inelastic (generated) event.

    Preferred: the simulator's generator-level count in the manifest (all charged final-state
    PYTHIA particles, over all generated events including those without hits). The stored
    tracks give a lower bound only: only particles with hits (and their ancestors) are stored,
    and weak-decay daughters are not primary.
    """
    width = 2 * ETA_CENTRAL
    per_gen_event = max(c.n_events, 1) * generated_per_written(c)
    out = {"dnch_deta_eta05_stored_tracks": n_stored / per_gen_event / width}
    nch, gen = c.counts.get("generator_nch_eta05"), c.counts.get("generated_events")
    if isinstance(nch, int) and isinstance(gen, int) and gen > 0:
        out["dnch_deta_eta05"] = nch / gen / width
        out["dnch_deta_eta05_stat_error"] = float(np.sqrt(nch)) / gen / width
        out["dnch_deta_eta05_source"] = f"manifest generator counts ({nch} charged / {gen} generated events)"
    elif not np.any(c.track_primary):
        out["dnch_deta_eta05"] = out["dnch_deta_eta05_stored_tracks"] = None
        out["dnch_deta_eta05_source"] = "unknown: no primary tracks (imported data without truth kinematics?)"
    else:
        out["dnch_deta_eta05"] = out["dnch_deta_eta05_stored_tracks"]
        out["dnch_deta_eta05_stat_error"] = float(np.sqrt(n_stored)) / per_gen_event / width
        out["dnch_deta_eta05_source"] = "stored primary charged tracks (no generator counts in the manifest)"
    if isinstance(gen, int):
        out["generated_events"] = gen
        out["events_without_hits_fraction"] = 1.0 - 1.0 / generated_per_written(c)
    return out


def physics_summary(path_or_dir: str | Path, max_events: int | None = None) -> dict:
    """Report numbers of a data set: dNch/deta at |eta| < 0.5 (primary charged tracks per event
    per unit eta), hits per event (mean, 99th percentile), tracks per event, PID class and
    noise hit fractions, mean hits per primary charged track at pT > 0.2 GeV/c and |eta| < 0.5."""
    return summary_from(collect(path_or_dir, max_events))
