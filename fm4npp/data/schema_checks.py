"""Checks of a data set's declared structure: the manifest's fields and a shard's schema (version, columns, types)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from fm4npp.data.errors import Problem
from fm4npp.data.schema import EVENT_SCHEMA, READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION_KEY, V3_COLUMNS, nullable

_READABLE = " or ".join(map(str, READABLE_SCHEMA_VERSIONS))


def _version(value) -> int | None:
    """A readable schema version from a manifest value or file metadata bytes, else None."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return int(text) if text in map(str, READABLE_SCHEMA_VERSIONS) else None


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


def schema_problems(schema: pa.Schema, file: str) -> list[Problem]:
    """Schema version (file metadata) and the columns of EVENT_SCHEMA with their types; files
    of version >= 2 must also declare every field non-nullable. Files of versions 1-2 lack the
    columns version 3 added (V3_COLUMNS) and are read without them."""
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
            if version is not None and version < 3 and field.name in V3_COLUMNS:
                continue
            problems.append(Problem(file, "column missing", column=field.name))
            continue
        got = schema.field(idx)
        if not nullable(got.type).equals(nullable(field.type)):
            problems.append(Problem(file, f"type {got.type}, expected {field.type}", column=field.name))
        elif version is not None and version >= 2 and not got.equals(field):
            problems.append(Problem(file, f"declared nullable ({got.type}), schema version {version} "
                                    f"declares {field.type} not null", column=field.name))
    return problems
