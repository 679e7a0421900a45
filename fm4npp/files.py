"""File helpers every layer may use: reading tensors from files that may not be ours, and
writing files so that a reader (or a killed writer) never sees a half-written one."""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Temporary files are hidden and end in this suffix, so a directory's leftovers from killed
# writers can be found and removed (data.shards.clean_tmp).
TMP_SUFFIX = ".tmp"


class BadFileError(ValueError):
    """A file that is missing, damaged or not in the format it claims."""


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """The tensors of a safetensors file (a format that cannot run code when read); a
    missing, damaged or foreign file is a BadFileError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise BadFileError(f"{path}: missing")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadFileError(f"{path}: not a readable safetensors file ({exc})") from None


def _new_tmp(path: Path) -> str:
    # os.open with O_EXCL rather than mkstemp: mkstemp makes the file 0600, and a data set or
    # model written by one user is read by others, so the final file must get the umask mode
    # an ordinary open would give it.
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path next to `path` for a writer that wants a file name (Parquet, safetensors,
    PYTHIA): on normal exit it is synced and renamed onto `path`, on an exception removed.
    The directory must exist. The file already exists (empty) when the block starts."""
    path = Path(path)
    tmp = _new_tmp(path)
    try:
        yield tmp
        # sync before rename, or a crash can leave the new name pointing at empty blocks
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj, *, newline: bool = True, **dump_kw) -> None:
    """json.dumps(obj, **dump_kw), plus a final newline unless newline=False. The text is made
    before the file is touched, so an object JSON cannot hold leaves no file behind."""
    atomic_write_text(path, json.dumps(obj, **dump_kw) + ("\n" if newline else ""))
