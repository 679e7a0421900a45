"""Shard files and manifest.json of a data set directory: atomic writes, hashes, resume.

A data set directory holds ``*.parquet`` shards and ``manifest.json`` with keys
schema_version, generator, detector, seeds, counts, files {name: {sha256, events, ...}}.
Every file is written to a hidden temporary name in the same directory and renamed into place,
so a killed writer leaves either the old file or the new one, never a torn one; a leftover
temporary file is removed by :func:`clean_tmp`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _tmp_in(directory: Path, name: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TMP_SUFFIX, dir=directory)
    os.close(fd)
    return tmp


def write_table_atomic(table: pa.Table, path: str | Path, compression: str = "zstd") -> str:
    """Write `table` as Parquet at `path` atomically; returns the file's sha256."""
    path = Path(path)
    tmp = _tmp_in(path.parent, path.name)
    try:
        pq.write_table(table, tmp, compression=compression, write_page_checksum=True)
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return digest


def write_json_atomic(obj: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = _tmp_in(path.parent, path.name)
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_manifest(directory: str | Path) -> dict | None:
    """The manifest of `directory`, None if there is none (ValueError if unreadable)."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({exc}); move it away to start afresh") from None


def write_manifest(directory: str | Path, manifest: dict) -> None:
    """Write manifest.json atomically, with counts.events/shards recomputed from `files`."""
    files = manifest.get("files", {})
    counts = dict(manifest.get("counts", {}))
    counts["events"] = int(sum(int(v["events"]) for v in files.values()))
    counts["shards"] = len(files)
    manifest = {**manifest, "counts": counts, "files": dict(sorted(files.items()))}
    write_json_atomic(manifest, Path(directory) / MANIFEST)


def clean_tmp(directory: str | Path) -> list[Path]:
    """Remove temporary files left by killed writers; returns what was removed."""
    gone = []
    for p in Path(directory).glob(f".*{TMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def verified_files(directory: str | Path, manifest: dict | None) -> dict:
    """Manifest file entries whose file exists with the recorded sha256 (others dropped)."""
    if not manifest:
        return {}
    ok = {}
    for name, entry in manifest.get("files", {}).items():
        path = Path(directory) / name
        if path.is_file() and isinstance(entry, dict) and sha256_file(path) == entry.get("sha256"):
            ok[name] = entry
    return ok
