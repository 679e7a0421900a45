"""The one typed configuration of a pretraining run; every default lives here.

Paper values (section "Neural Scaling Behaviors", appendix B): AdamW, lr 2e-4, weight decay
0.01, gradient clipping 0.1, cosine decay after a linear warmup (10k of 100k steps), global
batch 256 events. The CPU defaults below keep those except the batch and the step counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fm4npp import paths
from fm4npp.overrides import apply, parse_pairs
from fm4npp.serialize.config import PipelineConfig


@dataclass
class PretrainConfig:
    preset: str = "w32"  # model preset name (fm4npp.model.presets.PRESETS)
    n_layers: int = 0  # override the preset's depth (0 = the preset's)
    n_freq: int = 0  # override the preset's NeRF frequencies (0 = the preset's)
    # data set directory (Parquet shards + manifest.json), or a mixture of several,
    # NAME=PATH:WEIGHT,... (fm4npp.data.mixture: each PATH with its own bins.json)
    data: str = ""
    bins: str = ""  # serialization bins JSON; "" = <data>/bins.json (a mixture: must be "")
    steps: int = 1000  # optimizer steps in total (the cosine schedule ends here)
    warmup: int = -1  # linear warmup steps; -1 = 10 % of `steps` (the paper's 10k of 100k)
    lr: float = 2e-4  # peak learning rate (muP scales it per parameter group)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 0.1  # max global gradient norm
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of the peak lr
    # GLOBAL batch in events, split evenly across workers; by default the data pipeline's batch
    batch_size: int = PipelineConfig.batch_size
    workers: int = 1  # Ray Train workers (DDP ranks)
    cpus_per_worker: float = 0.5  # fractional so Ray Data still gets a CPU on 2 cores
    use_gpu: bool = False  # one GPU per worker, NCCL, bf16 autocast
    seed: int = 0  # model init, data order and every other random draw
    val_every: int = 100  # steps between validation passes (and one at the end)
    val_events: int = 0  # cap on validation events (0 = the whole val split)
    log_every: int = 10  # steps between metric reports
    ckpt_every: int = 100  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # checkpoints kept on storage
    max_failures: int = 2  # worker-group restarts before the run fails
    data_mode: str = "memory"  # "memory": exact, resumable order; "stream": data > memory
    difficulty_weighting: bool = True  # the paper's event-difficulty loss re-weighting
    # Pretraining objective (fm4npp.pretrain.objectives.OBJECTIVES: knn, knn_energy, masked,
    # hybrid, supervised); the fields after it are parameters of the objectives that name them.
    objective: str = "knn"
    mask_fraction: float = 0.3  # masked, hybrid: fraction of each event's real points hidden
    hybrid_weight: float = 0.5  # hybrid: loss = (1 - w) knn + w masked
    # Blocks also scan the event backwards (ModelConfig.bidirectional); only with objectives
    # whose targets are not later points of the scan (masked, supervised).
    bidirectional: bool = False
    # The model also embeds each point's subsystem (ModelConfig.n_subsystems): for detectors
    # beyond one TPC (sphenix, aleph, zeus) and mixed data; an all-TPC event is unchanged by it.
    subsystem_embedding: bool = False
    max_points: int = -1  # cap on points per event (0 = none, -1 = serialization default)
    order: str = ""  # serialization order (raster, radial, ...; "" = serialization default)
    data_fraction: float = 1.0  # nested subset of the training split (1.0 = all)
    mup: str = "preset"  # "preset" = the preset's choice, "on" / "off" to force muP
    # Continued pretraining: a pretraining checkpoint dir whose weights start this run (fresh
    # optimizer, schedule and data order; its event/D/C counters carry over so they stay totals).
    init_from: str = ""
    run_name: str = ""  # stable name (resume key); "" = derived from the config hash
    # Ray Train run dirs and checkpoints; "" = fm4npp.paths.storage_root() ($FM4NPP_STORAGE,
    # else <data home>/runs)
    storage_path: str = ""
    experiment: str = "fm4npp-pretrain"  # MLflow experiment
    # MODULE:FUNCTION every worker calls as fn(step=, rank=, cfg=) before each optimizer step:
    # profiling, or a test's fault injection (tests/fault_injection.py); "" = none
    step_hook: str = ""

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        return cls().replace(**d)

    def replace(self, **changes) -> "PretrainConfig":
        """A copy with ``changes``, each typed (fm4npp.overrides.apply); unknown keys refused."""
        return apply(self, changes, "pretraining config")

    def with_overrides(self, pairs: list[str]) -> "PretrainConfig":
        """Apply ``key=value`` strings (the CLI's ``--set``)."""
        return self.replace(**parse_pairs(pairs))

    # -- resolution ---------------------------------------------------------------------
    def resolved(self) -> "PretrainConfig":
        """Fill derived defaults and check values; the result is what runs and is logged."""
        from fm4npp.model.presets import PRESETS

        if self.preset not in PRESETS:
            raise KeyError(f"unknown preset {self.preset!r}; valid presets: {sorted(PRESETS)}")
        if not self.data:
            raise ValueError("no data directory given (config key `data`)")
        from fm4npp.data import mixture

        if mixture.is_mixture(self.data):
            if self.bins:
                raise ValueError(f"bad pretraining config: bins={self.bins!r} with a data mixture; each "
                                 "component is serialized with its own PATH/bins.json")
            data, bins = mixture.format_spec(mixture.parse_spec(self.data)), ""
        else:
            data = Path(self.data).expanduser().resolve()
            bins = Path(self.bins).expanduser().resolve() if self.bins else data / "bins.json"
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.n_layers >= 0 and self.n_freq >= 0, "n_layers and n_freq must be >= 0 (0 = preset's)"),
            (self.workers >= 1, "workers must be >= 1"),
            (self.batch_size >= self.workers, "batch_size (global) must be >= workers"),
            (self.batch_size % self.workers == 0, "batch_size must be divisible by workers"),
            (0.0 < self.data_fraction <= 1.0, "data_fraction must be in (0, 1]"),
            (self.mup in ("preset", "on", "off"), "mup must be one of preset/on/off"),
            (self.data_mode in ("memory", "stream"), "data_mode must be memory or stream"),
            (min(self.val_every, self.log_every, self.ckpt_every) >= 1,
             "val_every, log_every and ckpt_every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"bad pretraining config: {msg}")
        from fm4npp.pretrain.model_spec import model_config_for

        try:  # the objective's name, parameters and backbone, checked before any work
            model_config_for(self, k=1)
        except ValueError as exc:
            raise ValueError(f"bad pretraining config: {exc}") from None
        init_from = ""
        if self.init_from:
            from fm4npp.pretrain.checkpoint import MODEL_FILE, STATE_JSON, is_train_checkpoint

            init_from = str(Path(self.init_from).expanduser().resolve())
            if not is_train_checkpoint(init_from):
                raise ValueError(f"bad pretraining config: init_from {init_from} lacks "
                                 f"{MODEL_FILE} or {STATE_JSON} (not a pretraining checkpoint)")
        warmup = self.warmup if self.warmup >= 0 else max(1, self.steps // 10)
        out = dataclasses.replace(
            self, data=str(data), bins=str(bins), warmup=min(warmup, self.steps), init_from=init_from,
            storage_path=str(paths.storage_root(self.storage_path or None)),
        )
        if not out.run_name:
            out = dataclasses.replace(out, run_name=f"pretrain-{out.preset}-{out.config_hash()}")
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Hash of what determines the training result (not where it is stored or named)."""
        d = self.to_dict()
        for k in ("run_name", "storage_path", "experiment", "step_hook", "max_failures",
                  "log_every", "keep_checkpoints"):
            d.pop(k)
        defaults = PretrainConfig()
        for k in _LATER_FIELDS:  # at their defaults, runs named before them keep their names
            if d[k] == getattr(defaults, k):
                d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


# Fields added after runs were named by config_hash: left out of the hash at their defaults,
# so those runs resume under the same derived name.
_LATER_FIELDS = ("objective", "mask_fraction", "hybrid_weight", "bidirectional", "subsystem_embedding")
