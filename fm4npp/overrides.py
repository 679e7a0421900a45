"""The one reader of ``KEY=VALUE`` overrides (``--set`` of every command and study): the pairs,
and each string turned into the config field's type, refused by name when it cannot be; and of
``MODULE:FUNCTION`` specs (the study's --trainer, pretraining's step_hook)."""

from __future__ import annotations

import importlib

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_pairs(pairs) -> dict[str, str]:
    """``["lr=1e-3", "order=radial"]`` -> ``{"lr": "1e-3", "order": "radial"}``."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = (s.strip() for s in pair.split("=", 1))
        if not key:
            raise ValueError(f"--set {pair!r}: empty key")
        out[key] = value
    return out


def coerce(key: str, value, hint):
    """A CLI string becomes the field's type (booleans: one of TRUE or FALSE, nothing else);
    a value of the wrong type is refused by name."""
    if isinstance(value, str) and hint is not str:
        try:
            if hint is bool:
                low = value.lower()
                if low not in TRUE + FALSE:
                    raise ValueError(value)
                return low in TRUE
            return hint(value)
        except ValueError:
            raise ValueError(f"config key {key!r}: cannot read {value!r} as "
                             f"{hint.__name__}") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"config key {key!r}: expected {hint.__name__}, got {value!r}")
    return value


def load_function(spec: str, what: str):
    """``MODULE:FUNCTION`` -> the function; one clear error (naming ``what``) for anything else."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{what} expects MODULE:FUNCTION, got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what} {spec!r}: {exc}") from None
