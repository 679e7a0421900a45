"""``fm4npp data validate``: list every problem of a data set directory, touching nothing.

Checks: manifest present, parseable, right schema version, every listed shard present with
its sha256 and event count, no unlisted shard; each shard a readable Parquet file (missing,
corrupt, truncated) with the schema version in its metadata and the same schema as the
others; every row's content (see :func:`fm4npp.data.content_checks.table_problems`); event ids unique
across the data set.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from fm4npp.data.content_checks import table_problems
from fm4npp.data.dataset_files import open_shard, read_row_group
from fm4npp.data.errors import DataError, Problem
from fm4npp.data.schema_checks import manifest_problems
from fm4npp.data.schema import nullable
from fm4npp.data.shards import MANIFEST, read_manifest, sha256_file

__all__ = ["Problem", "check_dataset", "validate_dataset"]


def validate_dataset(directory: str | Path, *, allow_empty: bool = False) -> list[Problem]:
    """Every problem found in the data set at ``directory`` (empty list: valid). Read-only."""
    d = Path(directory)
    if not d.is_dir():
        return [Problem(str(d), "not a directory")]
    problems: list[Problem] = []
    listed: dict[str, dict] = {}
    manifest_path = str(d / MANIFEST)
    manifest = None
    try:
        manifest = read_manifest(d)
    except DataError as exc:
        problems += exc.problems
    if manifest is not None:
        problems += manifest_problems(manifest, manifest_path)
        if isinstance(manifest.get("files"), dict):
            listed = {k: v if isinstance(v, dict) else {} for k, v in manifest["files"].items()}

    on_disk = sorted(p.name for p in d.glob("*.parquet"))
    if manifest is not None:
        for name in on_disk:
            if name not in listed:
                problems.append(Problem(str(d / name), f"not listed in {MANIFEST}"))
    names = sorted(set(listed) | set(on_disk))
    if not names:
        problems.append(Problem(str(d), "no Parquet shards"))

    ref_schema: tuple[str, pa.Schema] | None = None
    first_row_of: dict[int, tuple[str, int]] = {}
    total_rows = 0
    for name in names:
        path = d / name
        entry = listed.get(name)
        if not path.exists():
            problems.append(Problem(str(path), f"listed in {MANIFEST} but missing"))
            continue
        if entry is not None and "sha256" in entry:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                problems.append(Problem(str(path), f"sha256 {digest[:12]}... does not match manifest "
                                        f"{str(entry['sha256'])[:12]}... (modified or corrupt)"))
        try:
            pf = open_shard(path)
        except DataError as exc:
            problems += exc.problems
            continue
        # Nullability aside (each shard was checked against its own schema version), so a
        # data set resumed across a version change still counts as one schema.
        schema = pa.schema([(f.name, nullable(f.type)) for f in pf.schema_arrow])
        if ref_schema is None:
            ref_schema = (name, schema)
        elif not schema.equals(ref_schema[1]):
            problems.append(Problem(str(path), f"schema differs from {ref_schema[0]}"))
        nrows = pf.metadata.num_rows
        total_rows += nrows
        if entry is not None and "events" in entry and entry["events"] != nrows:
            problems.append(Problem(str(path), f"{nrows} events, manifest says {entry['events']}"))
        row0 = 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            try:
                table = read_row_group(pf, path, g, row0)
            except DataError as exc:
                problems += exc.problems
                row0 += n
                continue
            problems += table_problems(table, str(path), row0, empty="keep" if allow_empty else "error")
            for r, e in enumerate(table.column("event_id").to_pylist()):
                if e is None:
                    continue
                if e in first_row_of and first_row_of[e][0] != name:
                    other = first_row_of[e]
                    problems.append(Problem(str(path), f"event_id also in {other[0]} row {other[1]}",
                                            row=row0 + r, column="event_id", event_id=e))
                first_row_of.setdefault(e, (name, row0 + r))
            row0 += n

    counts = manifest.get("counts") if isinstance(manifest, dict) else None
    expected = counts.get("events") if isinstance(counts, dict) else None
    if isinstance(expected, int) and expected != total_rows and not any(
        p.what.startswith(("listed in manifest", "not a readable")) for p in problems
    ):
        problems.append(Problem(manifest_path, f"counts.events {expected}, shards hold {total_rows}"))
    return problems


def check_dataset(directory: str | Path, *, allow_empty: bool = False) -> None:
    """Raise DataError with every problem :func:`validate_dataset` finds (nothing if valid)."""
    problems = validate_dataset(directory, allow_empty=allow_empty)
    if problems:
        raise DataError(problems, hint=f"run `fm4npp data validate {directory}` for all")
