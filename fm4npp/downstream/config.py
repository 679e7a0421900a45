"""Typed configuration of downstream adaptation (all defaults live here).

Paper (appendix "Downstream Model"): a linear projection of point features, then either a
Mask2Former-style track decoder (tracking) or one self-attention layer + MLP (PID, noise).
The paper's adapters have 2.39M (tracking) and 0.74M (classification) trainable parameters on
GPU; the CPU defaults below are smaller and say so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from fm4npp.overrides import apply_pairs

# electron (tag the scattered electron's hits) and q2 (event-level log10 Q2): ep DIS data
# only, their truth in fm4npp.downstream.dis
TASKS = ("tracking", "pid", "noise", "electron", "q2")
FEATURE_SOURCES = ("fm", "raw", "scratch")  # frozen FM / AdapterOnly / from-scratch backbone
HIT_GNNS = ("sage", "gat", "gcn", "graphconv")  # appendix C's PID / noise baselines
TRACK_GNNS = ("exatrkx",)  # the track-finding baseline
SOURCES = FEATURE_SOURCES + HIT_GNNS + TRACK_GNNS  # every value of FinetuneConfig.source


@dataclass(frozen=True)
class ModelInfo:
    source: str  # FinetuneConfig.source
    family: str  # MLflow tag fm4npp.model_family: what Table 2 groups rows by
    label: str  # row name in tables
    tasks: tuple[str, ...]  # the tasks it can do


# `fm4npp finetune --model` names (the CLI's vocabulary; "adapter_only" is source "raw").
MODELS = {
    "fm": ModelInfo("fm", "fm", "FM4NPP", TASKS),
    "adapter_only": ModelInfo("raw", "adapter_only", "AdapterOnly", TASKS),
    "scratch": ModelInfo("scratch", "scratch", "FromScratch", TASKS),
    "sage": ModelInfo("sage", "hit_gnn", "SAGEConv", ("pid", "noise")),
    "gat": ModelInfo("gat", "hit_gnn", "GATConv", ("pid", "noise")),
    "gcn": ModelInfo("gcn", "hit_gnn", "GCNConv", ("pid", "noise")),
    "graphconv": ModelInfo("graphconv", "hit_gnn", "GraphConv", ("pid", "noise")),
    "exatrkx": ModelInfo("exatrkx", "track_gnn", "Exa.TrkX", ("tracking",)),
}
BY_SOURCE = {m.source: name for name, m in MODELS.items()}  # source -> --model name


def model_info(source: str) -> ModelInfo:
    return MODELS[BY_SOURCE[source]]
FM_COMBINE = ("mix", "concat")  # how the frozen FM's layers are joined (FinetuneConfig.fm_combine)


@dataclass
class TrackingAdapterConfig:
    # d_e: point and query embedding width. 128, not 64: on 7,203 labelled events (6,000 steps)
    # it lifted per-event ARI for AdapterOnly 0.839 -> 0.881 and for the FM 0.858 -> 0.884.
    d_embed: int = 128
    n_queries: int = 48  # K track queries (p+p at 200 GeV: tens of tracks per event)
    n_layers: int = 3  # L decoder layers (cross-attn -> self-attn -> FFN)
    n_heads: int = 4
    d_ffn: int = 256
    dropout: float = 0.0
    mask_eps: float = 1e-4  # eps in the additive attention mask -log(p + eps)
    lambda_dice: float = 2.0
    lambda_focal: float = 20.0  # focal values are small (mean over points); MaskFormer uses 20
    lambda_cls: float = 2.0
    no_object_weight: float = 0.1  # down-weights the "no-object" class term (DETR eos_coef)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    min_track_hits: int = 1  # truth tracks with fewer (non-noise) spacepoints are not targets
    noise_in_masks: str = "ignore"  # "ignore": noise points are in no mask loss; "negative":
    # every query must reject them. Either way noise never forms a target track.


@dataclass
class ClassifierConfig:
    # d_p. 128, not 64: on 7,203 labelled events (6,000 steps) the wider adapter lifted macro
    # recall in PID (AdapterOnly 0.455 -> 0.532, FM 0.439 -> 0.465) and noise tagging
    # (AdapterOnly 0.589 -> 0.707, FM 0.733 -> 0.736): at 64 the baseline was capacity-bound,
    # which flattered the FM.
    d_embed: int = 128
    n_heads: int = 4
    d_hidden: int = 256  # MLP hidden width
    dropout: float = 0.0
    class_weight_power: float = 0.5  # weight_c = (N / (C n_c))^power from training labels;
    # 1 = "balanced", 0 = none; 0.5 trades accuracy for macro recall


@dataclass
class HitGNNConfig:
    """PID / noise GNN baselines (appendix C). Defaults are CPU-scale; GNN_SIZES["paper"] holds
    the paper's sizes. Edges and features: fm4npp.downstream.gnn.graph."""

    k: int = 16  # directed edges from the k nearest hits (paper 50)
    radius: float = 1.0  # ... closer than this in (eta_hat, cos phi, sin phi, r_hat) (paper 1)
    d_hidden: int = 64  # node-encoder MLP (2 hidden layers) and GNN width (paper 256)
    n_layers: int = 3  # GNN layers (paper 6)
    classifier_widths: str = "64,32"  # hidden widths of the hit-classifier MLP (paper 128,64)
    gat_heads: int = 1  # GATConv attention heads (averaged, so the width stays d_hidden)
    dropout: float = 0.0


@dataclass
class ExaTrkXConfig:
    """The Exa.TrkX-style track finder (appendix C; fm4npp.downstream.gnn.exatrkx). Defaults
    are CPU-scale; GNN_SIZES["paper"] holds the paper's thresholds and Exa.TrkX-like widths.
    The filter MLP stage of the paper is left out: the interaction network classifies every
    edge of the radius graph directly."""

    d_embed: int = 8  # metric-learning embedding dimension
    embed_hidden: int = 64  # embedding MLP width
    embed_layers: int = 3  # embedding MLP hidden layers
    radius: float = 1.0  # radius graph in the embedding space; also the hinge margin (paper 2)
    max_neighbours: int = 24  # at most this many edges per hit in the radius graph
    random_pairs: int = 4  # random (mostly negative) training pairs per hit and step
    gnn_hidden: int = 64  # interaction-network width
    n_iterations: int = 4  # interaction-network message-passing rounds
    edge_threshold: float = 0.5  # edges kept for connected components (paper 0.9)
    min_track_hits: int = 3  # smaller components are no track (label -1)


# Size presets of the GNN baselines as overrides (`fm4npp finetune --size`): "cpu" is the
# dataclass defaults, "paper" appendix C (and, where it gives none, Exa.TrkX-like widths).
GNN_SIZES = {
    "cpu": [],
    "paper": ["gnn.k=50", "gnn.d_hidden=256", "gnn.n_layers=6", "gnn.classifier_widths=128,64",
              "exatrkx.embed_hidden=1024", "exatrkx.embed_layers=4", "exatrkx.radius=2.0",
              "exatrkx.gnn_hidden=128", "exatrkx.n_iterations=8", "exatrkx.edge_threshold=0.9"],
}


@dataclass
class FinetuneConfig:
    task: str = "tracking"  # tracking | pid | noise | electron | q2 (ep DIS; see TASKS)
    # fm (frozen backbone) | raw (AdapterOnly) | scratch (random init, trained) | a GNN
    # baseline: sage | gat | gcn | graphconv (pid, noise) | exatrkx (tracking); see MODELS
    source: str = "fm"
    backbone: str = ""  # pretrained checkpoint dir (fm4npp.model.io); for scratch: its config
    preset: str = ""  # scratch without a checkpoint: model preset name
    data: str = ""  # data set dir (Parquet shards + manifest.json [+ bins.json])
    bins: str = ""  # serialization bins JSON; "" = <data>/bins.json
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    n_train_events: int = 0  # labelled training events (0 = all); nested prefix by seed
    n_test_events: int = 0  # 0 = all
    # Adapter training sees a random crop of this many points of a longer event (a memory
    # bound, not the serialization's cap, which the backbone's record fixes); scoring sees all.
    crop_points: int = 4000
    epochs: int = 20
    max_steps: int = 0  # cap on optimizer steps (0 = epochs decide)
    val_events: int = 100  # validation events for picking the best epoch by val loss (0 = off)
    batch_size: int = 8  # events per batch; also scoring's and feature extraction's default
    lr: float = 1e-3
    # The softmax layer-mix logits: a handful of scalars with small gradients; at `lr` they
    # stayed within 0.18-0.22 of uniform after 1,500 steps (5 layers), i.e. never chose.
    mix_lr: float = 1e-2
    # Which cached layers the FM adapter mixes: comma list, 0 = input embedding, i = block i;
    # "" = all of them. Probes which depth carries what a task needs.
    fm_layers: str = ""
    # How the FM adapter joins those layers: "mix" (the paper's softmax-weighted sum) or
    # "concat" (side by side; the adapter's linear projection weighs each layer by a matrix).
    fm_combine: str = "mix"
    # The FM adapter also sees AdapterOnly's raw point features (energy + NeRF coordinates) next
    # to the frozen states: a skip around the backbone, so the FM adapter's input is a superset
    # of AdapterOnly's and the comparison measures what the frozen states add. On PID (w64
    # backbone, width-128 adapter, 7,203 events) adding them hurt: val loss after 2,703 steps
    # 1.081 vs 0.954 for AdapterOnly.
    fm_with_raw: bool = False
    # Fixed ZCA whitening of the frozen point features (fm and raw sources), fitted on training
    # points; the value is the eigenvalue floor relative to the largest (0 = no whitening).
    # On 2,401 labelled events it lifted tracking ARI for both: FM 0.633 -> 0.702, AdapterOnly
    # 0.739 -> 0.754 (seed 0).
    whiten_eps: float = 1e-3
    backbone_lr: float = 2e-4  # scratch only: the backbone trains end to end at this lr
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    raw_n_freq: int = 6  # AdapterOnly NeRF frequencies on the normalised coordinates (0 = off)
    storage: str = ""  # storage root (fm4npp.paths.storage_root; "" = $FM4NPP_STORAGE or the data home's)
    cache_dir: str = ""  # feature cache; "" = <storage>/feature-cache
    out: str = ""  # adapter weights + result.json; "" = <storage>/finetune/<run name>
    experiment: str = "fm4npp-finetune"  # MLflow experiment ("" = do not log)
    tracking: TrackingAdapterConfig = field(default_factory=TrackingAdapterConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    gnn: HitGNNConfig = field(default_factory=HitGNNConfig)
    exatrkx: ExaTrkXConfig = field(default_factory=ExaTrkXConfig)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        info = model_info(self.source)
        if self.task not in info.tasks:
            raise ValueError(f"model {BY_SOURCE[self.source]!r} ({info.label}) does not do task "
                             f"{self.task!r}; it does {', '.join(info.tasks)}")
        if self.source == "fm" and not self.backbone:
            raise ValueError("source 'fm' needs a pretrained backbone directory (backbone=...)")
        if self.source == "scratch" and not (self.backbone or self.preset):
            raise ValueError("source 'scratch' needs a preset or a backbone dir (for its config)")
        if self.fm_layers and not all(t.strip().isdigit() for t in self.fm_layers.split(",")):
            raise ValueError(f"fm_layers must be a comma list of layer indices, got {self.fm_layers!r}")
        if self.fm_combine not in FM_COMBINE:
            raise ValueError(f"fm_combine must be one of {FM_COMBINE}, got {self.fm_combine!r}")
        if self.tracking.noise_in_masks not in ("ignore", "negative"):
            raise ValueError("tracking.noise_in_masks must be 'ignore' or 'negative'")
        widths = self.gnn.classifier_widths.split(",")
        if not all(w.strip().isdigit() and int(w) > 0 for w in widths):
            raise ValueError(f"gnn.classifier_widths must be a comma list of widths, got {self.gnn.classifier_widths!r}")

    def layer_indices(self, n_states: int) -> list[int]:
        """The fm_layers selection for a backbone with ``n_states`` (= n_layers + 1) states."""
        if not self.fm_layers:
            return list(range(n_states))
        idx = [int(t) for t in self.fm_layers.split(",")]
        bad = [i for i in idx if i >= n_states]
        if bad:
            raise ValueError(f"fm_layers {bad} out of range: the backbone has states 0..{n_states - 1}")
        return idx

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        d = dict(d)
        subs = {name: sub(**d.pop(name, {})) for name, sub in SECTIONS.items()}
        return cls(**d, **subs)

    def with_overrides(self, pairs: list[str]) -> "FinetuneConfig":
        """``key=value`` strings; nested keys as ``tracking.n_queries=64``."""
        return apply_pairs(self, pairs, "downstream config")

    def config_hash(self) -> str:
        d = self.to_dict()
        for k in ("out", "experiment", "cache_dir", "storage"):
            d.pop(k)
        d["max_points"] = d.pop("crop_points")  # hashed by its first name: run names stay
        # a section only its model reads stays out of the others' hashes (and so their run
        # names stay what they were before the GNN baselines existed)
        if self.source not in HIT_GNNS:
            d.pop("gnn")
        if self.source not in TRACK_GNNS:
            d.pop("exatrkx")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


SECTIONS = {"tracking": TrackingAdapterConfig, "classifier": ClassifierConfig, "gnn": HitGNNConfig,
            "exatrkx": ExaTrkXConfig}  # FinetuneConfig's sub-configs (``--set section.key=...``)
