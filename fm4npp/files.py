"""File helpers every layer may use: reading tensors from files that may not be ours."""

from __future__ import annotations

import os
from pathlib import Path


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
