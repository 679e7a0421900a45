"""Named model sizes as data.

m1..m6 are Table 1 of the paper (widths 64 ... 1536). The paper gives widths and parameter
counts only; we keep everything but the width fixed (13 layers, d_state 16, expand 2,
headdim 64), which matches all six counts within 8 % (m1 +7.9 %, m2 +5.7 %, m3..m6 within
1.3 %) and is what muP width transfer assumes. w8..w128 are a CPU ladder at fixed depth 4 and
headdim 16 for studies that must run on a laptop.
"""

from __future__ import annotations

from dataclasses import replace

from .config import ModelConfig

# Parameter counts of Table 1, for the record and the tests.
PAPER_PARAMS = {"m1": 0.34e6, "m2": 1.3e6, "m3": 5.3e6, "m4": 21e6, "m5": 84e6, "m6": 188e6}

_PAPER = dict(n_layers=13, d_state=16, expand=2, headdim=64)
_CPU = dict(n_layers=4, d_state=16, expand=2, headdim=16)

PRESETS: dict[str, ModelConfig] = {
    "m1": ModelConfig(d_model=64, **_PAPER),
    "m2": ModelConfig(d_model=128, **_PAPER),
    "m3": ModelConfig(d_model=256, **_PAPER),
    "m4": ModelConfig(d_model=512, **_PAPER),
    "m5": ModelConfig(d_model=1024, **_PAPER),
    "m6": ModelConfig(d_model=1536, **_PAPER),
    "w8": ModelConfig(d_model=8, **{**_CPU, "headdim": 8}),
    "w16": ModelConfig(d_model=16, **_CPU),
    "w24": ModelConfig(d_model=24, **_CPU),
    "w32": ModelConfig(d_model=32, **_CPU),
    "w64": ModelConfig(d_model=64, **_CPU),
    "w128": ModelConfig(d_model=128, **_CPU),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """A copy of preset `name`, with any ModelConfig fields overridden."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
