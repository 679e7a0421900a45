"""The one reader of ``KEY=VALUE`` overrides (``--set`` of every command and study): the pairs,
and each string turned into the config field's type, refused by name when it cannot be; and of
``MODULE:FUNCTION`` specs (the study's --trainer, pretraining's step_hook)."""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing

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
    """A CLI string becomes the field's type (booleans: one of TRUE or FALSE, nothing else;
    tuples: comma lists, ``tuple[int, int]`` from ``6,8``; ``X | None``: ``none`` or an X);
    a value of the wrong type is refused by name."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return coerce(key, value, next(a for a in args if a is not type(None)))
    if typing.get_origin(hint) is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(items):
            raise ValueError(f"config key {key!r}: expected {len(kinds)} comma-separated values, "
                             f"got {value!r}")
        return tuple(coerce(key, v.strip() if isinstance(v, str) else v, k) for v, k in zip(items, kinds))
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
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


def apply(obj, changes: dict, what: str = "config"):
    """A copy of dataclass ``obj`` with ``changes`` (``{"lr": "1e-3", "tracking.n_queries":
    64}``): a dotted key walks into nested dataclass fields, each value becomes its field's
    type (:func:`coerce`), and the result is built through the class (its checks run). An
    unknown key is refused naming the keys there are."""
    nested: dict[str, dict] = {}
    direct = {}
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in changes.items():
        head, dot, rest = key.partition(".")
        if head not in hints or head not in names:
            raise KeyError(f"unknown {what} key {key!r}; valid keys: {names}")
        sub = getattr(obj, head)
        if dot:
            if not dataclasses.is_dataclass(sub):
                raise KeyError(f"unknown {what} key {key!r}: {head!r} has no fields")
            nested.setdefault(head, {})[rest] = value
        elif dataclasses.is_dataclass(sub) and not isinstance(value, type(sub)):
            if not isinstance(value, dict):
                raise ValueError(f"{what} key {key!r} is a section: set its fields ({key}.FIELD=...)")
            nested.setdefault(head, {}).update(value)
        else:
            direct[head] = value if dataclasses.is_dataclass(sub) else coerce(key, value, hints[head])
    for head, sub_changes in nested.items():
        direct[head] = apply(getattr(obj, head), sub_changes, f"{what} section {head!r}")
    return dataclasses.replace(obj, **direct)


def apply_pairs(obj, pairs, what: str = "config"):
    """:func:`apply` of ``KEY=VALUE`` strings (the CLIs' and studies' ``--set``)."""
    return apply(obj, parse_pairs(pairs), what)


def flatten(obj, prefix: str = "") -> dict:
    """Dataclass ``obj`` as one level of dotted keys, walking into nested dataclass fields only
    (``tracking.d_embed: 128``; a dict-valued field stays one value): how nested configs
    become MLflow params, and what :func:`apply` takes back."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out


def load_function(spec: str, what: str):
    """``MODULE:FUNCTION`` -> the function; one clear error (naming ``what``) for anything else."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{what} expects MODULE:FUNCTION, got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what} {spec!r}: {exc}") from None
