"""Content checks of event tables (nulls, hit-list lengths, finite values, labels, track ids), as Problems."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fm4npp.data.errors import Problem
from fm4npp.data.schema import HIT_COLUMNS, N_PID_CLASSES, SUBSYSTEMS, TRACK_TYPE, pid_class_of


FINITE_HIT_COLUMNS = ("hit_x", "hit_y", "hit_z", "hit_energy")
FINITE_TRACK_FIELDS = ("px", "py", "pz", "vx", "vy", "vz")
EMPTY_POLICIES = ("error", "skip", "keep")


def _flat(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(row of every list element, row offsets into the flat values, flat values) of a list column."""
    arr = table.column(name).combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    parents = np.repeat(np.arange(len(arr), dtype=np.int64), lengths)
    return parents, offsets, arr.flatten()


def _np(values: pa.Array) -> np.ndarray:
    """Flat values as numpy with nulls filled by 0 (bool False)."""
    if values.null_count:
        values = pc.fill_null(values, False if pa.types.is_boolean(values.type) else 0)
    return values.to_numpy(zero_copy_only=False)


def _row_problems(mask, parents, offsets, file, row0, column, what, event_ids, values=None):
    """One Problem per row with any flagged element: count and first offending element."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    rows, first, counts = np.unique(parents[idx], return_index=True, return_counts=True)
    out = []
    for row, f, n in zip(rows.tolist(), first.tolist(), counts.tolist()):
        i = idx[f]
        detail = f" = {np.asarray(values[i]).item()!r}" if values is not None else ""
        out.append(
            Problem(file, f"{n} {what} (first at element {i - offsets[row]}{detail})",
                    row=row0 + row, column=column, event_id=event_ids[row])
        )
    return out


def table_problems(
    table: pa.Table, file: str, row0: int = 0, *, empty: str = "error"
) -> list[Problem]:
    """Every content problem in ``table`` (rows ``row0``.. of ``file``); checks only columns present.

    Checks: nulls, equal hit-list lengths per row, finite coordinates/energies (energy >= 0),
    subsystem ids among SUBSYSTEMS, resolutions > 0 (+inf: not measured, NaN: unknown),
    pid_class in 0..4 and consistent with hit_pdg where that is known (!= 0), hit track ids
    present among the row's tracks, unique track ids, finite track kinematics, event ids
    unique, and (``empty="error"``) events without hits.
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    with np.errstate(invalid="ignore"):  # garbage values are reported, not warned about
        return _table_problems(table, file, row0, empty)


def _table_problems(table: pa.Table, file: str, row0: int, empty: str) -> list[Problem]:
    names = set(table.column_names)
    n = table.num_rows
    problems: list[Problem] = []
    event_ids: list = [None] * n
    if "event_id" in names:
        col = table.column("event_id")
        event_ids = col.to_pylist()
        for r, e in enumerate(event_ids):
            if e is None:
                problems.append(Problem(file, "event_id is null", row=row0 + r, column="event_id"))
        seen: dict[int, int] = {}
        for r, e in enumerate(event_ids):
            if e is not None and e in seen:
                problems.append(Problem(file, f"duplicate event_id (also row {row0 + seen[e]})",
                                        row=row0 + r, column="event_id", event_id=e))
            elif e is not None:
                seen[e] = r

    hit_cols = [c for c in HIT_COLUMNS if c in names]
    flat = {}
    for c in hit_cols:
        arr = table.column(c)
        if arr.null_count:
            for r in np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False)).tolist():
                problems.append(Problem(file, "hit list is null", row=row0 + r, column=c, event_id=event_ids[r]))
        parents, offsets, values = _flat(table, c)
        flat[c] = (parents, offsets, values)
        if values.null_count:
            problems += _row_problems(values.is_null().to_numpy(zero_copy_only=False), parents, offsets,
                                      file, row0, c, "null values", event_ids)

    lengths = {c: np.diff(flat[c][1]) for c in hit_cols}
    if hit_cols:
        ref = hit_cols[0]
        bad = np.zeros(n, dtype=bool)
        for c in hit_cols[1:]:
            bad |= lengths[c] != lengths[ref]
        for r in np.flatnonzero(bad).tolist():
            detail = ", ".join(f"{c} {int(lengths[c][r])}" for c in hit_cols)
            problems.append(Problem(file, f"hit lists of different lengths: {detail}",
                                    row=row0 + r, event_id=event_ids[r]))
        if empty == "error":
            for r in np.flatnonzero(lengths[ref] == 0).tolist():
                problems.append(Problem(file, "empty event (no hits)", row=row0 + r, event_id=event_ids[r]))

    def values_np(c):
        # Nulls were reported above; a neutral fill keeps them out of the value checks.
        return _np(flat[c][2])

    for c in FINITE_HIT_COLUMNS:
        if c in flat:
            v = values_np(c).astype(np.float64)
            parents, offsets, _ = flat[c]
            problems += _row_problems(~np.isfinite(v), parents, offsets, file, row0, c,
                                      "non-finite values", event_ids, v)
            if c == "hit_energy":
                problems += _row_problems(v < 0, parents, offsets, file, row0, c,
                                          "negative energies", event_ids, v)
    if "hit_subsystem" in flat:
        v = values_np("hit_subsystem").astype(np.int64)
        parents, offsets, _ = flat["hit_subsystem"]
        problems += _row_problems(~np.isin(v, list(SUBSYSTEMS)), parents, offsets, file, row0, "hit_subsystem",
                                  f"subsystem ids not in {SUBSYSTEMS}", event_ids, v)
    for c in ("hit_sigma_rphi", "hit_sigma_z"):
        if c in flat:
            v = values_np(c).astype(np.float64)
            parents, offsets, _ = flat[c]
            problems += _row_problems(v <= 0, parents, offsets, file, row0, c, "resolutions <= 0", event_ids, v)
    if "hit_pid_class" in flat:
        v = values_np("hit_pid_class").astype(np.int64)
        parents, offsets, _ = flat["hit_pid_class"]
        problems += _row_problems((v < 0) | (v >= N_PID_CLASSES), parents, offsets, file, row0,
                                  "hit_pid_class", f"labels outside 0..{N_PID_CLASSES - 1}", event_ids, v)
        if "hit_pdg" in flat and np.array_equal(lengths["hit_pdg"], lengths["hit_pid_class"]):
            pdg = values_np("hit_pdg").astype(np.int64)
            wrong = (pdg != 0) & (pid_class_of(pdg) != v)
            problems += _row_problems(wrong, parents, offsets, file, row0, "hit_pid_class",
                                      "labels inconsistent with hit_pdg", event_ids, v)

    if "tracks" in names:
        problems += _track_problems(table, file, row0, event_ids, flat.get("hit_track_id"))
    return problems


def _track_problems(table, file, row0, event_ids, hit_track_flat) -> list[Problem]:
    problems = []
    col = table.column("tracks")
    if col.null_count:
        for r in np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)).tolist():
            problems.append(Problem(file, "tracks list is null", row=row0 + r, column="tracks",
                                    event_id=event_ids[r]))
    parents, offsets, structs = _flat(table, "tracks")
    if structs.null_count:
        problems += _row_problems(structs.is_null().to_numpy(zero_copy_only=False), parents, offsets,
                                  file, row0, "tracks", "null tracks", event_ids)
    fields = {f.name: structs.field(f.name) for f in TRACK_TYPE}
    for name, arr in fields.items():
        if arr.null_count:
            problems += _row_problems(arr.is_null().to_numpy(zero_copy_only=False), parents, offsets,
                                      file, row0, f"tracks.{name}", "null values", event_ids)
    for name in FINITE_TRACK_FIELDS:
        v = _np(fields[name]).astype(np.float64)
        problems += _row_problems(~np.isfinite(v), parents, offsets, file, row0, f"tracks.{name}",
                                  "non-finite values", event_ids, v)
    # Keys (row, track_id), sorted once, make both tests vectorised: duplicates are equal
    # neighbours, and a hit's track is found by binary search (much cheaper than np.isin,
    # which sorts the hits too: every pretraining run pays this).
    tid = _np(fields["track_id"]).astype(np.int64)
    keys = parents * (1 << 33) + tid
    order = np.argsort(keys, kind="stable")
    dup = np.zeros(len(keys), dtype=bool)
    dup[order[1:]] = keys[order[1:]] == keys[order[:-1]]
    problems += _row_problems(dup, parents, offsets, file, row0, "tracks.track_id",
                              "duplicate track ids", event_ids, tid)
    if hit_track_flat is not None:
        hparents, hoffsets, hvalues = hit_track_flat
        hid = _np(hvalues).astype(np.int64)
        hkeys, sorted_keys = hparents * (1 << 33) + hid, keys[order]
        pos = np.minimum(np.searchsorted(sorted_keys, hkeys), max(len(sorted_keys) - 1, 0))
        missing = sorted_keys[pos] != hkeys if len(sorted_keys) else np.ones(len(hkeys), bool)
        problems += _row_problems(missing, hparents, hoffsets, file, row0, "hit_track_id",
                                  "track ids not in this event's tracks", event_ids, hid)
    return problems
