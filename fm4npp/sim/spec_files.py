"""Reading the simulator's TOML description files (detectors, facilities) with errors naming the file and the key."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent


class SpecFileError(ValueError):
    """A detector or facility file that is missing, not TOML, or has a wrong key or value."""

    def __init__(self, path, key: str, what: str):
        self.path, self.key, self.what = str(path), key, what
        super().__init__(f"{path}: {key}: {what}" if key else f"{path}: {what}")


def known(kind: str) -> list[str]:
    """Names of the files shipped in fm4npp/sim/<kind>/ (e.g. kind = "detectors")."""
    return sorted(p.stem for p in (HERE / kind).glob("*.toml"))


def find(name_or_path: str, kind: str) -> Path:
    """A shipped file by name (fm4npp/sim/<kind>/<name>.toml) or a path to a user's file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise SpecFileError(path, "", "no such file")
        return path.resolve()
    path = HERE / kind / f"{text}.toml"
    if not path.is_file():
        raise ValueError(f"unknown {kind[:-1]} {text!r}; known: {known(kind)} (or give a path to a .toml file)")
    return path


def read(path: Path) -> tuple[dict, str]:
    """(parsed TOML, sha256 of the file's bytes)."""
    data = path.read_bytes()
    try:
        doc = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecFileError(path, "", f"not valid TOML: {exc}") from None
    return doc, hashlib.sha256(data).hexdigest()


class Table:
    """One TOML table being read: typed access by key, and unknown keys refused at the end.

    ``where`` is the table's place in the file (e.g. ``subsystems[1].modules[0]``), so that an
    error names file and key exactly; ``inherited`` holds values a parent table supplies."""

    def __init__(self, path: Path, where: str, data, inherited: dict | None = None):
        if not isinstance(data, dict):
            raise SpecFileError(path, where, f"must be a table, got {type(data).__name__}")
        self.path, self.where = path, where
        self.data = {**(inherited or {}), **data}
        self.own = set(data)
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, what: str) -> SpecFileError:
        return SpecFileError(self.path, self.key(name), what)

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, typ, default=..., check=None, why: str = ""):
        """Value of ``name`` of type ``typ`` (float accepts int); ``default`` (... = required);
        ``check(value)`` False -> error saying ``why``."""
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "missing")
            return default
        v = self.data[name]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        ok = isinstance(v, typ) and not (typ in (int, float) and isinstance(v, bool))
        if not ok:
            raise self.error(name, f"must be {getattr(typ, '__name__', typ)}, got {v!r}")
        if check is not None and not check(v):
            raise self.error(name, f"{v!r}: {why}")
        return v

    def floats(self, name: str, default=..., check=None, why: str = "") -> tuple[float, ...]:
        v = self.get(name, list, default)
        if v is default:
            return v
        if not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise self.error(name, f"must be a non-empty list of numbers, got {v!r}")
        out = tuple(float(x) for x in v)
        if check is not None and not check(out):
            raise self.error(name, f"{list(out)}: {why}")
        return out

    def strings(self, name: str, default=...) -> tuple[str, ...]:
        v = self.get(name, list, default)
        if v is default:
            return v
        if not all(isinstance(x, str) for x in v):
            raise self.error(name, f"must be a list of strings, got {v!r}")
        return tuple(v)

    def tables(self, name: str, required: bool = True) -> list[dict]:
        v = self.get(name, list, ... if required else [])
        if required and not v:
            raise self.error(name, "must list at least one table")
        return v

    def done(self) -> None:
        """Refuse keys of this table that nothing read (typos, keys of another readout)."""
        extra = sorted(self.own - self.used)
        if extra:
            raise self.error(extra[0], "unknown key here" + (f" (also {extra[1:]})" if len(extra) > 1 else ""))


POSITIVE = (lambda v: v > 0, "must be > 0")
NON_NEGATIVE = (lambda v: v >= 0, "must be >= 0")
FRACTION = (lambda v: 0 < v <= 1, "must be in (0, 1]")
