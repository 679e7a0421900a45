"""A run's whole specification: the typed config of each stage it ran, nested in one object.

Sections (each default lives in its stage's config and nowhere else; this module adds none):

- ``pretrain``   fm4npp.pretrain.config.PretrainConfig: data, objective, optimisation, storage;
- ``serialize``  fm4npp.serialize.config.SerializeConfig: how events became sequences (the
  bins file's, with the run's order and point cap);
- ``model``      fm4npp.model.config.ModelConfig: the architecture the weights belong to;
- ``downstream`` fm4npp.downstream.config.FinetuneConfig: the adaptation (a downstream run).

A section a run has no stage for is None (a pretraining run has no downstream; AdapterOnly has
no backbone). Forms, each read back exactly: the nested dict (``run_spec.json``, an MLflow
artifact of every pretraining and downstream run), dotted flat keys (:meth:`RunSpec.params`;
``--set`` addresses the same keys, e.g. ``downstream.tracking.n_queries=64``, through the one
parser, fm4npp.overrides), and a checkpoint (:func:`from_checkpoint`: the records a pretraining
checkpoint has always held, so older checkpoints read too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from fm4npp.downstream.config import FinetuneConfig
from fm4npp.model.config import ModelConfig
from fm4npp.overrides import apply, flatten, parse_pairs
from fm4npp.pretrain.config import PretrainConfig
from fm4npp.serialize.config import SerializeConfig

SPEC_FILE = "run_spec.json"
_BUILD = {"pretrain": PretrainConfig.from_dict, "serialize": lambda d: SerializeConfig(**d),
          "model": ModelConfig.from_dict, "downstream": FinetuneConfig.from_dict}


@dataclass(frozen=True)
class RunSpec:
    pretrain: PretrainConfig | None = None
    serialize: SerializeConfig | None = None
    model: ModelConfig | None = None
    downstream: FinetuneConfig | None = None

    def to_dict(self) -> dict:
        return {f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to_dict()
                for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        unknown = sorted(set(d) - set(_BUILD))
        if unknown:
            raise KeyError(f"unknown run-spec section(s) {unknown}; sections: {list(_BUILD)}")
        return cls(**{k: None if v is None else _BUILD[k](v) for k, v in d.items()})

    def params(self) -> dict[str, str]:
        """Every field as ``SECTION.FIELD[.FIELD]`` -> its JSON text (MLflow params)."""
        return {f"{name}.{k}": json.dumps(v) for name in _BUILD if getattr(self, name) is not None
                for k, v in flatten(getattr(self, name)).items()}

    @classmethod
    def from_params(cls, params: dict) -> "RunSpec":
        """:meth:`params` back (keys without a section prefix, e.g. other params, are ignored)."""
        nested: dict = {}
        for key, text in params.items():
            section, dot, rest = key.partition(".")
            if section in _BUILD and dot:
                node = nested.setdefault(section, {})
                *path, last = rest.split(".")
                for part in path:
                    node = node.setdefault(part, {})
                node[last] = json.loads(text)
        return cls.from_dict(nested)

    def with_overrides(self, pairs: list[str]) -> "RunSpec":
        """``SECTION.FIELD=VALUE`` strings; the section must be present."""
        changes: dict[str, dict] = {}
        for key, value in parse_pairs(pairs).items():
            section, dot, rest = key.partition(".")
            if section not in _BUILD or not dot:
                raise KeyError(f"run-spec override {key!r}: expected SECTION.FIELD, sections {list(_BUILD)}")
            if getattr(self, section) is None:
                raise KeyError(f"run-spec override {key!r}: this run has no {section} section")
            changes.setdefault(section, {})[rest] = value
        import dataclasses

        return dataclasses.replace(self, **{s: apply(getattr(self, s), c, f"{s} config")
                                            for s, c in changes.items()})

    def write(self, path) -> Path:
        from fm4npp.files import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path


def read(path) -> RunSpec:
    """A ``run_spec.json``; a malformed one is refused naming the file."""
    path = Path(path)
    try:
        return RunSpec.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a run spec ({exc})") from None


def from_checkpoint(directory) -> RunSpec:
    """The spec of a pretraining checkpoint: a Ray Train checkpoint dir (train_state.json
    holds the config and serialization; the model is rebuilt as the run built it) or a
    ``pretrained/`` dir (fm4npp.model.io: the model config and serialization in config.json;
    the pretraining config there too, or, for one saved before it was, in the checkpoint
    around it)."""
    from fm4npp.model.io import CONFIG_FILE
    from fm4npp.pretrain.checkpoint import PRETRAINED_DIR, STATE_JSON, load_state_records

    d = Path(directory)
    if (d / PRETRAINED_DIR / CONFIG_FILE).is_file():
        d = d / PRETRAINED_DIR
    if (d / CONFIG_FILE).is_file():
        meta = json.loads((d / CONFIG_FILE).read_text())
        extra = meta.get("extra", {})
        config = extra.get("pretrain_config")
        if config is None and (d.parent / STATE_JSON).is_file():
            config = load_state_records(d.parent, ["config"]).get("config")
        return RunSpec(pretrain=None if config is None else PretrainConfig.from_dict(config),
                       serialize=_serialize(extra), model=ModelConfig.from_dict(meta["model_config"]))
    if (d / STATE_JSON).is_file():
        from fm4npp.pretrain.model_spec import model_config_for

        state = load_state_records(d, ["config", "serialize"])
        cfg, scfg = PretrainConfig.from_dict(state["config"]), _serialize(state)
        return RunSpec(pretrain=cfg, serialize=scfg,
                       model=None if scfg is None else model_config_for(cfg, k=scfg.k))
    raise FileNotFoundError(f"{d}: neither a pretraining checkpoint ({STATE_JSON}) nor a "
                            f"pretrained model ({CONFIG_FILE})")


def _serialize(record: dict) -> SerializeConfig | None:
    return SerializeConfig(**record["serialize"]) if "serialize" in record else None
