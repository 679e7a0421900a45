"""Reading event Parquet data sets: events as dicts of numpy arrays, checked on the way in.

A data set is a directory of ``*.parquet`` shards plus ``manifest.json`` (see
``fm4npp.data.shards``); a single shard file can be read as well. Every check that fails
raises :class:`DataError`, whose message names the file, the row (0-based within the file,
with its ``event_id`` when known), the column and the problem. The same checks, collected
instead of raised, back ``fm4npp data validate`` (:mod:`fm4npp.data.validate`).

Units as in :mod:`fm4npp.data.schema`: cm, GeV/c.

The pieces: :mod:`fm4npp.data.errors` (Problem, DataError), :mod:`fm4npp.data.shards` (the
manifest), :mod:`fm4npp.data.dataset_files` (shard list, opening shards),
:mod:`fm4npp.data.schema_checks` and :mod:`fm4npp.data.content_checks`; this module reads
(iter_tables, read_events, read_table).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fm4npp.data.content_checks import EMPTY_POLICIES, _flat, table_problems
from fm4npp.data.dataset_files import open_shard, read_row_group, shard_paths
from fm4npp.data.errors import DataError, Problem
from fm4npp.data.schema import EVENT_SCHEMA, HIT_COLUMNS, PRE_V3_SUBSYSTEM, SUBSYSTEM_IDS, V3_COLUMNS
from fm4npp.data.shards import MANIFEST, read_manifest, sha256_file


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
    Version 3 columns asked for but absent from an older file are filled with what such a file
    means (:func:`with_pre_v3_columns`), so every table has the requested columns.
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
    manifest = read_manifest(path_or_dir, missing_ok=True) if verify_hashes and Path(path_or_dir).is_dir() else None
    if manifest is not None:
        expected = {name: e.get("sha256") for name, e in manifest["files"].items()}
    for path in paths:
        if path.name in expected:
            if sha256_file(path) != expected[path.name]:
                raise DataError(Problem(str(path), f"sha256 does not match {MANIFEST} (modified or corrupt)"))
        pf = open_shard(path)
        row0 = 0
        for g in range(pf.num_row_groups):
            nrows = pf.metadata.row_group(g).num_rows
            absent = [c for c in V3_COLUMNS if columns is not None and c in columns
                      and c not in pf.schema_arrow.names]
            # a v1/v2 file: read one present hit column for the events' hit counts
            extra = [] if not absent or "hit_x" in columns else ["hit_x"]
            table = read_row_group(pf, path, g, row0, columns + extra if absent else columns)
            if absent:
                table = with_pre_v3_columns(table, absent).drop_columns(extra).select(columns)
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


def with_pre_v3_columns(table: pa.Table, names) -> pa.Table:
    """``table`` (of a version 1/2 file, with ``hit_x``) plus the version 3 columns ``names``
    as such a file means them: every hit a TPC hit (:data:`PRE_V3_SUBSYSTEM`), resolutions
    unknown (NaN)."""
    counts = pc.fill_null(pc.list_value_length(table.column("hit_x")), 0).to_numpy()
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    fill = {"hit_subsystem": SUBSYSTEM_IDS[PRE_V3_SUBSYSTEM]}
    for name in names:
        typ = HIT_COLUMNS[name]
        values = pa.array(np.full(int(counts.sum()), fill.get(name, np.nan)), type=typ)
        field = EVENT_SCHEMA.field(name)
        table = table.append_column(field, pa.ListArray.from_arrays(offsets, values, type=field.type))
    return table


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
