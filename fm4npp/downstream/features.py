"""Frozen foundation-model features for the adapters, with an on-disk cache.

The pretrained backbone runs once per event in eval mode without gradients; the input
embedding and the residual stream after every block (FM4NPP.forward(..., return_hidden=True))
are kept per point as (N, n_layers + 1, d_model). Adapters see a learnable softmax-weighted mix
of the layers (`LayerMix`) or the layers side by side (`FrozenFMSource`, ``combine="concat"``).
Because the backbone is frozen, these states never change while adapters train, so they are
cached on disk: one safetensors file per event under
``<cache_dir>/<checkpoint hash>-v<FEATURE_VERSION>/<event content hash>.safetensors``. The
checkpoint hash covers every file of the checkpoint dir; the event hash covers the serialized
coordinates and energies (so a different serialization, bin file or data set can never hit a
stale entry). Cached states are stored as float16 (halves the disk and RAM; the adapters train
in float32).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fm4npp import paths
from fm4npp.downstream.config import FM_COMBINE, FinetuneConfig
from fm4npp.files import BadFileError, atomic_path, read_safetensors
# Bumped whenever what is stored per event changes (2: the embedding joined the layers), so an
# old cache is never read as the new layout.
FEATURE_VERSION = 2


def checkpoint_hash(path: str | Path) -> str:
    """SHA-256 over the relative names and bytes of every file of a checkpoint dir (or file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"checkpoint dir {path} holds no files")
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def event_key(event: dict) -> str:
    """Content hash of an event's backbone inputs (serialized coords and energies)."""
    h = hashlib.sha256()
    for name in ("coords", "energy"):
        a = np.ascontiguousarray(np.asarray(event[name], dtype=np.float32))
        h.update(name.encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:32]


class FeatureCache:
    """Per-event backbone states on disk, namespaced by checkpoint hash."""

    def __init__(self, root: str | Path | None, ckpt_hash: str):
        self.dir = Path(root or paths.feature_cache()) / f"{ckpt_hash[:24]}-v{FEATURE_VERSION}"
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        p = self.path(key)
        try:
            states = read_safetensors(p)["states"] if p.exists() else None
        except (BadFileError, KeyError):  # damaged from outside: recompute and overwrite it
            states = None
        if states is None:
            self.misses += 1
            return None
        self.hits += 1
        return states

    def put(self, key: str, states: torch.Tensor) -> None:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(key)) as tmp:  # a concurrent reader never sees half a file
            save_file({"states": states.to(torch.float16).contiguous()}, tmp)


def pad_points(arrays: Sequence, pad_value=0.0, dtype=None) -> torch.Tensor:
    """Right-pad per-event arrays (N_i, ...) to (B, max N, ...)."""
    ts = [torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a) for a in arrays]
    if dtype is not None:
        ts = [t.to(dtype) for t in ts]
    L = max(t.shape[0] for t in ts)
    out = ts[0].new_full((len(ts), L, *ts[0].shape[1:]), pad_value)
    for i, t in enumerate(ts):
        out[i, : t.shape[0]] = t
    return out


def points_mask(lengths: Sequence[int]) -> torch.Tensor:
    L = max(lengths)
    return torch.arange(L)[None, :] < torch.as_tensor(lengths)[:, None]


@torch.no_grad()
def backbone_states(
    model: nn.Module,
    events: Sequence[dict],
    *,
    cache: FeatureCache | None = None,
    batch_size: int = FinetuneConfig.batch_size,
    progress: bool = False,
) -> list[torch.Tensor]:
    """Per event, the frozen backbone's hidden states (N_i, n_layers + 1, d_model), float16.

    Events already in ``cache`` are read back; the others run through ``model`` (eval mode, no
    grad) in padded batches of events of similar length, and are written to the cache.
    """
    import time

    model.eval()
    keys = [event_key(e) for e in events]
    out: list[torch.Tensor | None] = [cache.get(k) if cache is not None else None for k in keys]
    todo = [i for i, s in enumerate(out) if s is None]
    todo.sort(key=lambda i: len(events[i]["energy"]))  # less padding
    t0 = time.time()
    for n, start in enumerate(range(0, len(todo), batch_size)):
        idx = todo[start : start + batch_size]
        lengths = [len(events[i]["energy"]) for i in idx]
        coords = pad_points([events[i]["coords"] for i in idx], dtype=torch.float32)
        energy = pad_points([events[i]["energy"] for i in idx], dtype=torch.float32)
        mask = points_mask(lengths)
        sub = None  # only a model that embeds subsystems reads them (old events carry none)
        if getattr(model.cfg, "n_subsystems", 0) and all("subsystem" in events[i] for i in idx):
            sub = pad_points([events[i]["subsystem"] for i in idx], dtype=torch.long)
        _, hidden = model(coords, energy, mask, return_hidden=True,
                          **({"subsystem": sub} if sub is not None else {}))
        states = torch.stack(hidden, dim=2)  # (B,L,n_layers+1,d)
        for j, i in enumerate(idx):
            s = states[j, : lengths[j]].to(torch.float16).contiguous()
            out[i] = s
            if cache is not None:
                cache.put(keys[i], s)
        if progress and (n % 20 == 0 or start + batch_size >= len(todo)):
            done = min(start + batch_size, len(todo))
            rate = done / max(time.time() - t0, 1e-9)
            print(f"features: {done}/{len(todo)} events computed ({rate:.1f} ev/s, "
                  f"ETA {(len(todo) - done) / max(rate, 1e-9):.0f} s)", flush=True)
    return out  # type: ignore[return-value]


class Whitening(nn.Module):
    """Fixed ZCA whitening of point features, one transform per group (= backbone layer).

    Fitted once on training points (no labels) and frozen. Why: the pretrained embedding of
    w64 maps its inputs with condition number ~5e3, and half of the (layer-normalised) feature
    directions carry < 1e-3 of the top variance, while raw NeRF inputs are unit-scale sines.
    A linear projection trained by Adam on such inputs learns the weak directions slowly.
    Whitening is an invertible linear map, so it changes the conditioning, not what the
    adapter's linear projection can express. ``eps`` (relative to each group's top eigenvalue)
    caps the gain so float16 noise in dead directions is not blown up. Unfitted = identity.
    """

    def __init__(self, n_groups: int, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(n_groups, d))
        self.register_buffer("matrix", torch.eye(d).repeat(n_groups, 1, 1))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "Whitening":
        """x (P, n_groups, d) training points."""
        x = x.double()
        for g in range(x.shape[1]):
            xg = x[:, g]
            mu = xg.mean(0)
            evals, evecs = torch.linalg.eigh(torch.cov((xg - mu).T))
            evals = evals.clamp_min(0) + self.eps * evals.max()
            self.mean[g] = mu.float()
            self.matrix[g] = (evecs @ torch.diag(evals.rsqrt()) @ evecs.T).float()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., n_groups, d) -> the same shape, whitened per group."""
        return torch.einsum("...gd,gde->...ge", x - self.mean, self.matrix)


class LayerMix(nn.Module):
    """Learnable softmax-weighted sum over backbone layers: (B,L,n_layers,d) -> (B,L,d).

    Each layer is first layer-normalised (no affine): the residual stream grows with depth,
    and without this the softmax weights would mostly learn the scale, not the choice of layer.
    ``whitening`` (optional, fixed) is applied per layer after the normalisation.
    """

    def __init__(self, n_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_layers))

    @staticmethod
    def normalise(states: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(states.float(), states.shape[-1:])

    def forward(self, states: torch.Tensor, whitening: Whitening | None = None) -> torch.Tensor:
        states = self.normalise(states)
        if whitening is not None:
            states = whitening(states)
        w = torch.softmax(self.logits, 0)
        return torch.einsum("blnd,n->bld", states, w)


class FrozenFMSource(nn.Module):
    """Feature source for the FM adapters: cached frozen states -> [whitening] -> combined.

    ``combine="mix"`` is the paper's softmax-weighted sum of the layers (`LayerMix`, d_model
    wide). ``"concat"`` hands the adapter every selected layer side by side (n * d_model wide),
    so its linear projection learns one matrix per layer instead of one scalar: the sum puts
    the input embedding and the contextual blocks into the same d_model directions, where the
    projection can no longer tell them apart.
    """

    kind = "fm"

    def __init__(self, layers: Sequence[int], d_model: int, whiten_eps: float, combine: str = "mix"):
        super().__init__()
        if combine not in FM_COMBINE:
            raise ValueError(f"combine must be one of {FM_COMBINE}, got {combine!r}")
        self.register_buffer("layers", torch.as_tensor(list(layers), dtype=torch.long), persistent=False)
        self.mix = LayerMix(len(layers)) if combine == "mix" else None
        self.whitening = Whitening(len(layers), d_model, whiten_eps) if whiten_eps > 0 else None
        self.d_out = d_model if combine == "mix" else d_model * len(layers)

    def _select(self, states: torch.Tensor) -> torch.Tensor:
        return states.index_select(-2, self.layers)

    def fit_whitening(self, events: Sequence[dict], states: Sequence[torch.Tensor], max_points: int) -> None:
        if self.whitening is not None:
            pts = sample_points([self._select(s) for s in states], max_points)
            self.whitening.fit(LayerMix.normalise(pts))

    def forward(self, batch: dict) -> torch.Tensor:
        states = self._select(batch["states"])
        if self.mix is not None:
            return self.mix(states, self.whitening)
        states = LayerMix.normalise(states)
        if self.whitening is not None:
            states = self.whitening(states)
        return states.flatten(-2)


def sample_points(per_event: Sequence[torch.Tensor], max_points: int, seed: int = 0) -> torch.Tensor:
    """All points of all events stacked, or a seeded uniform sample of ``max_points`` of them."""
    x = torch.cat([torch.as_tensor(t) for t in per_event])
    if x.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_points]]
    return x


def resolve_backbone(spec: str | Path, storage: str | Path | None = None) -> Path:
    """The model directory a ``--backbone`` names: a pretrained dir (config.json), a pretraining
    checkpoint, a checkpoint holding ``pretrained/``, a Ray Train run dir (its latest
    checkpoint), or a run name under the storage root (fm4npp.paths.storage_root)."""
    from fm4npp.model.io import CONFIG_FILE
    from fm4npp.pretrain.checkpoint import PRETRAINED_DIR, is_train_checkpoint

    path = Path(spec).expanduser()
    if not path.is_dir() and not path.is_absolute() and len(path.parts) == 1:
        path = paths.storage_root(storage) / path  # a run name
    if not path.is_dir():
        raise FileNotFoundError(f"backbone {spec}: no such directory, nor a run of that name in "
                                f"{paths.storage_root(storage)}")
    # Ray Train names them by timestamp; checkpoint_manager_snapshot.json is its file beside them
    checkpoints = sorted(p for p in path.glob("checkpoint_*") if p.is_dir())
    if not (path / CONFIG_FILE).is_file() and not is_train_checkpoint(path) and checkpoints:
        path = checkpoints[-1]
    if (path / PRETRAINED_DIR / CONFIG_FILE).is_file():
        path = path / PRETRAINED_DIR
    return path.resolve()


def load_backbone(path: str | Path):
    """(model, extra), frozen in eval mode, from a pretrained dir: either the
    ``fm4npp.model.io.save_pretrained`` format (config.json + model.safetensors) or a
    pretraining checkpoint as Ray Train writes it (fm4npp.pretrain.checkpoint: model weights +
    training state, whose config names the preset; k is read off the head's shape)."""
    from fm4npp.model.io import CONFIG_FILE, from_pretrained

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"backbone {path}: no such directory")
    if (path / CONFIG_FILE).is_file():
        model, extra = from_pretrained(str(path))
    else:
        model, extra = _from_train_checkpoint(path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, extra


def _from_train_checkpoint(path: Path):
    from fm4npp.model.backbone import FM4NPP
    from fm4npp.files import read_safetensors
    from fm4npp.pretrain.checkpoint import MODEL_FILE, STATE_JSON, load_train_state
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.model_spec import model_config_for

    if not (path / MODEL_FILE).is_file():
        raise FileNotFoundError(f"backbone {path}: neither config.json nor {STATE_JSON} + "
                                f"{MODEL_FILE} (not a pretrained model directory)")
    state = load_train_state(path)
    weights = read_safetensors(path / MODEL_FILE)
    if "head.weight" not in weights:
        raise ValueError(f"backbone {path / MODEL_FILE}: no head.weight (not an FM4NPP model)")
    k = weights["head.weight"].shape[0] // 3
    model = FM4NPP(model_config_for(PretrainConfig(**state["config"]), k))
    model.load_state_dict(weights, strict=True)
    extra = {"bins_hash": state.get("bins_hash", ""), "step": state.get("step")}
    extra.update({k: state[k] for k in ("serialize", "order", "max_points", "objective", "mixture",
                                        "bins_sources") if k in state})
    return model, extra
