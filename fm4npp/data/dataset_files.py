"""Locating and opening a data set's files: the shard list (from the manifest, read by
:func:`fm4npp.data.shards.read_manifest`), Parquet shards and their row groups."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fm4npp.data.errors import DataError, Problem
from fm4npp.data.schema_checks import manifest_problems, schema_problems
from fm4npp.data.shards import MANIFEST, read_manifest


def shard_paths(path_or_dir: str | Path) -> list[Path]:
    """The shard files to read: the file itself, the manifest's files, or all ``*.parquet``."""
    path = Path(path_or_dir)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(Problem(str(path), "no such file or directory"))
    manifest = read_manifest(path, missing_ok=True)
    if manifest is not None:
        problems = manifest_problems(manifest, str(path / MANIFEST))
        if problems:
            raise DataError(problems)
        paths = [path / name for name in sorted(manifest["files"])]
        missing = [Problem(str(p), f"listed in {MANIFEST} but missing") for p in paths if not p.exists()]
        if missing:
            raise DataError(missing)
        return paths
    paths = sorted(path.glob("*.parquet"))
    if not paths:
        raise DataError(Problem(str(path), f"no {MANIFEST} and no *.parquet files"))
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


def read_row_group(pf: pq.ParquetFile, path, group: int, row0: int, columns=None) -> pa.Table:
    """Row group ``group`` (first row ``row0``) of an open shard; DataError naming the rows."""
    try:
        return pf.read_row_group(group, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        last = row0 + pf.metadata.row_group(group).num_rows - 1
        raise DataError(Problem(str(path), f"rows {row0}..{last} unreadable (corrupt or truncated?): "
                                f"{exc}", row=row0)) from None
