"""Reading event Parquet data sets: events as dicts of numpy arrays, checked on the way in.

A data set is a directory of ``*.parquet`` shards plus ``manifest.json`` (see
``fm4npp.data.shards``); a single shard file can be read as well. Every check that fails
raises :class:`DataError`, whose message names the file, the row (0-based within the file,
with its ``event_id`` when known), the column and the problem. The same checks, collected
instead of raised, back ``fm4npp data validate`` (:mod:`fm4npp.data.validate`).

Units as in :mod:`fm4npp.data.schema`: cm, GeV/c.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fm4npp.data.schema import (
    EVENT_SCHEMA,
    HIT_COLUMNS,
    N_PID_CLASSES,
    READABLE_SCHEMA_VERSIONS,
    TRACK_TYPE,
    nullable,
    pid_class_of,
)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION_KEY = b"fm4npp.schema_version"
FINITE_HIT_COLUMNS = ("hit_x", "hit_y", "hit_z", "hit_energy")
FINITE_TRACK_FIELDS = ("px", "py", "pz", "vx", "vy", "vz")
EMPTY_POLICIES = ("error", "skip", "keep")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set: where (file, row, column) and what."""

    file: str
    what: str
    row: int | None = None  # 0-based row within ``file``
    column: str | None = None
    event_id: int | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            eid = "" if self.event_id is None else f" (event_id {self.event_id})"
            where.append(f"row {self.row}{eid}")
        if self.column is not None:
            where.append(f"column {self.column}")
        return ": ".join(where + [self.what])


class DataError(ValueError):
    """Bad input data; ``problems`` lists everything found (``problem`` is the first).

    ``hint``: what to do for the whole list (e.g. the command that lists every problem).
    Pickles with its problems, so it crosses Ray task boundaries intact."""

    def __init__(self, problems: Problem | Sequence[Problem], hint: str = ""):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        if not self.problems:
            raise ValueError("DataError needs at least one problem")
        self.hint = hint
        lines = [str(p) for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"... and {len(self.problems) - 20} more problems")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return (type(self), (self.problems, self.hint))

    @property
    def problem(self) -> Problem:
        return self.problems[0]

    @property
    def file(self) -> str:
        return self.problem.file

    @property
    def row(self) -> int | None:
        return self.problem.row

    def one_line(self, limit: int = 3) -> str:
        """The first ``limit`` problems on one line, then how many more there are (and the hint)."""
        text = "; ".join(" ".join(str(p).split()) for p in self.problems[:limit])
        more = len(self.problems) - limit
        if more > 0:
            text += f"; and {more} more {'problems' if more > 1 else 'problem'}"
            text += f": {self.hint}" if self.hint else ""
        return text


def find_data_error(exc: BaseException) -> DataError | None:
    """The DataError behind ``exc``, or None: looks through exception chaining and Ray's
    wrappers (``RayTaskError.cause``, Ray Train's ``WorkerGroupError.worker_failures`` and
    ``ControllerError.controller_failure``), so a bad file met inside a Ray worker can be
    reported as the one line it is."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError(DataError) also passes isinstance
        if isinstance(e, DataError):
            return cause if isinstance(cause, DataError) else e
        failures = getattr(e, "worker_failures", None)
        todo += [cause, getattr(e, "controller_failure", None), e.__cause__, e.__context__,
                 *(failures.values() if isinstance(failures, dict) else ())]
    return None


# ---------------------------------------------------------------------------- files


def load_manifest(directory: str | Path) -> dict:
    """The parsed ``manifest.json`` of a data set directory (DataError if absent or bad)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(Problem(str(path), "manifest missing")) from None
    except OSError as exc:
        raise DataError(Problem(str(path), f"manifest unreadable: {exc}")) from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(Problem(str(path), f"manifest is not valid JSON: {exc}")) from None
    if not isinstance(manifest, dict):
        raise DataError(Problem(str(path), "manifest is not a JSON object"))
    return manifest


def manifest_problems(manifest: dict, path: str) -> list[Problem]:
    """Structural problems of a parsed manifest (its ``files`` entries are checked elsewhere)."""
    problems = []
    version = manifest.get("schema_version")
    if version is None:
        problems.append(Problem(path, "manifest has no schema_version"))
    elif _version(version) is None:
        problems.append(Problem(path, f"manifest schema_version {version!r}, "
                                f"this code reads {_READABLE}"))
    files = manifest.get("files")
    if not isinstance(files, dict):
        problems.append(Problem(path, "manifest has no 'files' object {name: {sha256, events}}"))
    else:
        for name, entry in files.items():
            if Path(name).name != name:
                problems.append(Problem(path, f"file entry {name!r} is not a plain file name"))
            if not isinstance(entry, dict) or "sha256" not in entry or "events" not in entry:
                problems.append(Problem(path, f"file entry {name!r} lacks sha256/events"))
    return problems


def shard_paths(path_or_dir: str | Path) -> list[Path]:
    """The shard files to read: the file itself, the manifest's files, or all ``*.parquet``."""
    path = Path(path_or_dir)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(Problem(str(path), "no such file or directory"))
    if (path / MANIFEST_NAME).exists():
        manifest = load_manifest(path)
        problems = manifest_problems(manifest, str(path / MANIFEST_NAME))
        if problems:
            raise DataError(problems)
        paths = [path / name for name in sorted(manifest["files"])]
        missing = [Problem(str(p), "listed in manifest.json but missing") for p in paths if not p.exists()]
        if missing:
            raise DataError(missing)
        return paths
    paths = sorted(path.glob("*.parquet"))
    if not paths:
        raise DataError(Problem(str(path), "no manifest.json and no *.parquet files"))
    return paths


def open_shard(path: str | Path) -> pq.ParquetFile:
    """Open one shard, refusing missing, truncated or non-Parquet files and foreign schemas."""
    path = Path(path)
    if not path.exists():
        raise DataError(Problem(str(path), "file missing"))
    try:
        # Checksums are verified where the writer stored them (write_page_checksum=True).
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(Problem(str(path), f"not a readable Parquet file (corrupt or truncated?): {exc}")) from None
    problems = schema_problems(pf.schema_arrow, str(path))
    if problems:
        raise DataError(problems)
    return pf


_READABLE = " or ".join(map(str, READABLE_SCHEMA_VERSIONS))


def _version(value) -> int | None:
    """A readable schema version from a manifest value or file metadata bytes, else None."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return int(text) if text in map(str, READABLE_SCHEMA_VERSIONS) else None


def schema_problems(schema: pa.Schema, file: str) -> list[Problem]:
    """Schema version (file metadata) and the columns of EVENT_SCHEMA with their types; files
    of version >= 2 must also declare every field non-nullable."""
    problems = []
    raw = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    version = None if raw is None else _version(raw)
    if raw is None:
        problems.append(Problem(file, f"no {SCHEMA_VERSION_KEY.decode()} in the file metadata"))
    elif version is None:
        problems.append(Problem(file, f"schema version {raw.decode(errors='replace')!r}, "
                                f"this code reads {_READABLE}"))
    for field in EVENT_SCHEMA:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            problems.append(Problem(file, "column missing", column=field.name))
            continue
        got = schema.field(idx)
        if not nullable(got.type).equals(nullable(field.type)):
            problems.append(Problem(file, f"type {got.type}, expected {field.type}", column=field.name))
        elif version is not None and version >= 2 and not got.equals(field):
            problems.append(Problem(file, f"declared nullable ({got.type}), schema version {version} "
                                    f"declares {field.type} not null", column=field.name))
    return problems


def read_row_group(pf: pq.ParquetFile, path, group: int, row0: int, columns=None) -> pa.Table:
    """Row group ``group`` (first row ``row0``) of an open shard; DataError naming the rows."""
    try:
        return pf.read_row_group(group, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        last = row0 + pf.metadata.row_group(group).num_rows - 1
        raise DataError(Problem(str(path), f"rows {row0}..{last} unreadable (corrupt or truncated?): "
                                f"{exc}", row=row0)) from None


# ---------------------------------------------------------------------------- content checks


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


# ---------------------------------------------------------------------------- reading


def iter_tables(
    path_or_dir: str | Path,
    columns: Sequence[str] | None = None,
    *,
    check: bool = True,
    empty: str = "error",
    verify_hashes: bool = False,
) -> Iterator[tuple[Path, int, pa.Table]]:
    """Yield ``(file, first_row, table)`` per Parquet row group, checked unless ``check=False``.

    ``empty``: "error" raises on events without hits, "skip" drops them from the yielded
    tables, "keep" passes them through. ``verify_hashes``: compare each shard's sha256 with
    the manifest before reading it (catches every corruption, costs one extra read).
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    columns = list(columns) if columns is not None else None
    if columns is not None:
        unknown = [c for c in columns if c not in EVENT_SCHEMA.names]
        if unknown:
            raise ValueError(f"unknown columns {unknown}; known: {EVENT_SCHEMA.names}")
    paths = shard_paths(path_or_dir)
    expected = {}
    if verify_hashes and Path(path_or_dir).is_dir() and (Path(path_or_dir) / MANIFEST_NAME).exists():
        expected = {name: e.get("sha256") for name, e in load_manifest(path_or_dir)["files"].items()}
    for path in paths:
        if path.name in expected:
            from fm4npp.data.shards import sha256_file

            if sha256_file(path) != expected[path.name]:
                raise DataError(Problem(str(path), "sha256 does not match manifest.json (modified or corrupt)"))
        pf = open_shard(path)
        row0 = 0
        for g in range(pf.num_row_groups):
            nrows = pf.metadata.row_group(g).num_rows
            table = read_row_group(pf, path, g, row0, columns)
            if check:
                problems = table_problems(table, str(path), row0, empty="keep" if empty == "skip" else empty)
                if problems:
                    raise DataError(problems)
            if empty == "skip":
                hit_cols = [c for c in HIT_COLUMNS if c in table.column_names]
                if hit_cols:
                    nonempty = pc.greater(pc.fill_null(pc.list_value_length(table.column(hit_cols[0])), 0), 0)
                    table = table.filter(nonempty)
            yield path, row0, table
            row0 += nrows


def table_to_events(table: pa.Table) -> Iterator[dict]:
    """Rows of an event table as dicts: list columns -> numpy arrays, ``tracks`` -> dict of arrays."""
    flat = {}
    for name in table.column_names:
        typ = table.schema.field(name).type
        if pa.types.is_list(typ):
            _, offsets, values = _flat(table, name)
            if pa.types.is_struct(typ.value_type):
                values = {f.name: values.field(f.name).to_numpy(zero_copy_only=False) for f in typ.value_type}
            else:
                values = values.to_numpy(zero_copy_only=False)
            flat[name] = (offsets, values)
        else:
            flat[name] = (None, table.column(name).to_numpy())
    for r in range(table.num_rows):
        event = {}
        for name, (offsets, values) in flat.items():
            if offsets is None:
                event[name] = values[r]
            elif isinstance(values, dict):
                event[name] = {k: v[offsets[r]:offsets[r + 1]] for k, v in values.items()}
            else:
                event[name] = values[offsets[r]:offsets[r + 1]]
        yield event


def read_events(
    path_or_dir: str | Path,
    columns: Sequence[str] | None = None,
    *,
    empty: str = "error",
    check: bool = True,
    verify_hashes: bool = False,
) -> Iterator[dict]:
    """Iterate events of a shard or data set directory as dicts of numpy arrays.

    Keys are the column names (``event_id`` a numpy int64 scalar; ``hit_*`` arrays of one
    event's hits; ``tracks`` a dict of per-track field arrays). ``columns`` restricts what is
    read (and checked). ``empty`` decides what happens to events without hits: "error"
    (DataError), "skip" or "keep". Bad input raises :class:`DataError` naming file, row,
    column and problem. ``verify_hashes`` checks shard sha256s against the manifest first.
    """
    for _, _, table in iter_tables(path_or_dir, columns, check=check, empty=empty, verify_hashes=verify_hashes):
        yield from table_to_events(table)


def read_table(path_or_dir: str | Path, columns: Sequence[str] | None = None, *,
               empty: str = "error", check: bool = True) -> pa.Table:
    """All events as one Arrow table (checked like :func:`read_events`)."""
    tables = [t for _, _, t in iter_tables(path_or_dir, columns, check=check, empty=empty)]
    if tables:
        return pa.concat_tables(tables)
    return EVENT_SCHEMA.empty_table().select(list(columns) if columns is not None else EVENT_SCHEMA.names)
