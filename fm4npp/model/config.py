"""Configuration of the FM4NPP Mamba2 backbone (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from fm4npp.data.schema import PRE_V3_SUBSYSTEM, SUBSYSTEM_IDS, SUBSYSTEMS
from fm4npp.serialize.config import SerializeConfig

# The subsystem whose embedding row is pinned at zero: every hit before schema version 3 is
# one of it, so on such data the subsystem embedding changes nothing.
REFERENCE_SUBSYSTEM = SUBSYSTEM_IDS[PRE_V3_SUBSYSTEM]
N_SUBSYSTEM_IDS = len(SUBSYSTEMS)  # ModelConfig.n_subsystems that embeds every id of the schema


@dataclass
class ModelConfig:
    d_model: int = 64  # model width (Table 1: 64 ... 1536)
    n_layers: int = 13  # residual Mamba2 blocks
    d_state: int = 16  # SSM state size N per head
    expand: int = 2  # d_inner = expand * d_model
    headdim: int = 64  # P; n_heads = d_inner / headdim
    ngroups: int = 1  # groups sharing B and C (like GQA)
    d_conv: int = 4  # causal depthwise conv kernel width
    chunk_size: int = 32  # SSD chunk length of the PyTorch scan (fastest on CPU: benchmarks/model.py)
    fused_chunk_size: int = 256  # chunk length for mamba_ssm's fused kernels on GPU
    k: int = SerializeConfig.k  # neighbours predicted per point (the data's k): head outputs 3k
    n_freq: int = 10  # NeRF frequencies 2^0 ... 2^(n_freq-1)
    coord_dim: int = 3  # (r, phi, eta), normalised to [0, 1]
    norm_eps: float = 1e-5
    # Mamba2 initialisation of the SSM parameters.
    a_init_min: float = 1.0  # A = -exp(A_log), A_log = log(U[a_init_min, a_init_max])
    a_init_max: float = 16.0
    dt_min: float = 1e-3  # dt at init is log-uniform in [dt_min, dt_max]
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    proj_bias: bool = False  # bias of the in/out projections inside the mixer
    # Maximal update parameterization (muP-SSM): init and per-group lr scale with
    # d_model / mup_base_width; at the base width muP and standard parameterization coincide.
    mup: bool = False
    mup_base_width: int = 256  # the paper tunes hyper-parameters on m3 (width 256)
    use_fused_kernels: bool = True  # mamba_ssm kernels when importable and on CUDA
    # Every block also runs a second Mamba2 over the reversed sequence (backbone.Block), so a
    # point's features see the whole event. Leaks the kNN targets: pretraining refuses it
    # with the causal objectives (fm4npp.pretrain.objectives).
    bidirectional: bool = False
    mask_token: bool = False  # a learned embedding that replaces masked points' inputs
    # Extra per-point output heads {name: outputs per point} a pretraining objective trains
    # beside the kNN head (which is always there: the downstream reads k off its shape).
    output_heads: dict[str, int] = field(default_factory=dict)
    # Subsystem ids embedded, 0 = no subsystem input (every model before it: same parameters,
    # same outputs); N_SUBSYSTEM_IDS embeds all of fm4npp.data.schema.SUBSYSTEMS. Added to the
    # point embedding; zero at init and, for the TPC, always (embed.py).
    n_subsystems: int = 0

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def n_heads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def pos_dim(self) -> int:
        """Size of the NeRF encoding gamma(p): p plus a sin and cos per frequency."""
        return self.coord_dim * (1 + 2 * self.n_freq)

    def __post_init__(self) -> None:
        problems = []
        if self.d_model <= 0 or self.n_layers <= 0 or self.d_state <= 0:
            problems.append("d_model, n_layers and d_state must be positive")
        if self.d_inner % self.headdim:
            problems.append(f"d_inner={self.d_inner} is not a multiple of headdim={self.headdim}")
        elif self.n_heads % self.ngroups:
            problems.append(f"n_heads={self.n_heads} is not a multiple of ngroups={self.ngroups}")
        if self.chunk_size <= 0 or self.d_conv <= 0 or self.k <= 0:
            problems.append("chunk_size, d_conv and k must be positive")
        self.output_heads = {str(n): int(s) for n, s in self.output_heads.items()}
        if any(s <= 0 for s in self.output_heads.values()):
            problems.append(f"output_heads need positive sizes, got {self.output_heads}")
        if self.n_subsystems and not REFERENCE_SUBSYSTEM < self.n_subsystems <= len(SUBSYSTEMS):
            problems.append(f"n_subsystems={self.n_subsystems}: 0 (off) or {REFERENCE_SUBSYSTEM + 1}.."
                            f"{N_SUBSYSTEM_IDS} (ids of {SUBSYSTEMS})")
        if not 0 < self.dt_min <= self.dt_max:
            problems.append("need 0 < dt_min <= dt_max")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {unknown}")
        return cls(**d)
