"""The one reader of ``KEY=VALUE`` overrides (``--set`` of every command and study): the pairs,
and each string turned into the config field's type, refused by name when it cannot be."""

from __future__ import annotations

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
