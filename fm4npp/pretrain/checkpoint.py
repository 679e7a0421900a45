"""Pretraining checkpoints in formats that cannot run code when read.

A checkpoint directory holds
- ``model.safetensors``: the model's tensors;
- ``train_state.safetensors``: every tensor of the training state (optimizer moments, RNG
  states, ...), flat, keyed by its path in the state;
- ``train_state.json``: the rest of the state (step, config, counters, data position,
  scheduler, optimizer hyper-parameters), with each tensor replaced by a reference to its
  key in the safetensors file;
- for the final one, ``pretrained/`` (fm4npp.model.io format: what the adapters load).

Nothing is unpickled: a checkpoint from an untrusted place can at worst hold wrong numbers.
A pickled ``train_state.pt`` (the format before this one) is refused, never loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fm4npp.files import BadFileError, read_safetensors

MODEL_FILE = "model.safetensors"
STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
LEGACY_STATE_FILE = "train_state.pt"
PRETRAINED_DIR = "pretrained"
FORMAT = "fm4npp-train-state"
FORMAT_VERSION = 1

# JSON markers for what JSON cannot hold natively
_TENSOR, _ARRAY, _TUPLE, _ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"


class CheckpointError(BadFileError):
    """A checkpoint that is missing, damaged or in a format we refuse to read."""


def _encode(obj, tensors: dict, path: str):
    """``obj`` as JSON-able data; tensors and arrays moved into ``tensors`` under ``path``."""
    import torch

    if torch.is_tensor(obj):
        tensors[path] = obj.detach().cpu().contiguous().clone()
        return {_TENSOR: path}
    if isinstance(obj, np.ndarray):
        # safetensors has no uint32 for torch: store as int64, restore the dtype
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj).astype(np.int64)
                                         if obj.dtype == np.uint32 else np.ascontiguousarray(obj))
        return {_ARRAY: path, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        # optimizer state is keyed by parameter index: keep the keys' types
        return {_ITEMS: [[k, _encode(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path!r} in a checkpoint")


def _decode(obj, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        return tensors[obj[_TENSOR]]
    if _ARRAY in obj:
        return tensors[obj[_ARRAY]].numpy().astype(obj["dtype"])
    if _TUPLE in obj:
        return tuple(_decode(v, tensors) for v in obj[_TUPLE])
    if _ITEMS in obj:
        return {k: _decode(v, tensors) for k, v in obj[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_train_state(directory: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (nested dicts/lists/tuples of tensors, arrays and plain values) as
    train_state.safetensors + train_state.json into ``directory``."""
    from safetensors.torch import save_file

    d = Path(directory)
    tensors: dict = {}
    body = _encode(state, tensors, "state")
    text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "state": body})
    save_file(tensors, str(d / STATE_TENSORS))
    (d / STATE_JSON).write_text(text)


def is_train_checkpoint(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / MODEL_FILE).is_file() and (d / STATE_JSON).is_file()


def load_train_state(directory: str | os.PathLike) -> dict:
    """The training state saved by ``save_train_state``; refuses pickles and damaged files."""
    meta = _state_json(directory)
    d = Path(directory)
    tensors = read_safetensors(d / STATE_TENSORS)
    try:
        return _decode(meta["state"], tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{d}: {STATE_JSON} and {STATE_TENSORS} disagree ({exc!r})") from None


def load_state_records(directory: str | os.PathLike, keys) -> dict:
    """The named tensor-free entries of a training state (config, serialize, ...) without
    reading its tensors (a large model's optimizer moments); absent keys are left out."""
    state = _state_json(directory)["state"]
    try:
        return {k: _decode(state[k], {}) for k in keys if k in state}
    except KeyError as exc:
        raise CheckpointError(f"{directory}: entry {exc} of {STATE_JSON} holds tensors") from None


def _state_json(directory) -> dict:
    d = Path(directory)
    if not (d / STATE_JSON).is_file():
        if (d / LEGACY_STATE_FILE).is_file():
            raise CheckpointError(
                f"{d / LEGACY_STATE_FILE}: a pickled training state; fm4npp does not unpickle "
                "checkpoints (unpickling runs code). Its model weights "
                f"({d / MODEL_FILE}) are safe to use, or retrain with this version")
        raise CheckpointError(f"{d}: no {STATE_JSON} (not a pretraining checkpoint)")
    try:
        meta = json.loads((d / STATE_JSON).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{d / STATE_JSON}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT \
            or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{d / STATE_JSON}: not an {FORMAT} v{FORMAT_VERSION} file")
    return meta
