"""Physics lists of the transport ("baseline", "extended") and the nuclear properties of a material.

"baseline" is the transport as it was before the switch existed (its output is fixed byte for
byte). "extended" adds, for low-momentum secondaries toward the FM4NPP paper's noise fraction:

- loopers followed until they range out or leave: no turn cap for soft electrons (the
  baseline stops them after 2 turns, 8 for others); only a large safety cap remains;
- photons: Compton scattering (Klein-Nishina), photo-absorption (K-shell Born) and pair
  production with its energy dependence (Bethe-Heitler), :mod:`fm4npp.sim.photon_transport`;
- hadronic absorption in material with slow nuclear fragments, :mod:`fm4npp.sim.hadronic`.

Units: cm, g/cm^2, GeV.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from fm4npp.sim.config import TransportConfig

PHYSICS_LISTS = ("baseline", "extended")

# Safety caps of "extended" (not physics): a 1 MeV electron in the Ar mix (CSDA range
# ~0.5 g/cm^2 ~ 2.4 m of gas) makes ~100 turns of 3.4 mm radius before it stops.
EXTENDED_MAX_TURNS = 3000.0
EXTENDED_MAX_CROSSINGS = 20000


def check(cfg: TransportConfig) -> None:
    if cfg.physics not in PHYSICS_LISTS:
        raise ValueError(f"transport physics {cfg.physics!r}: unknown, expected one of {', '.join(PHYSICS_LISTS)}")


def is_extended(cfg: TransportConfig) -> bool:
    check(cfg)
    return cfg.physics == "extended"


def resolve(cfg: TransportConfig) -> TransportConfig:
    """The settings the transport runs with: baseline unchanged; extended without turn caps."""
    if not is_extended(cfg):
        return cfg
    return replace(cfg, max_turns=EXTENDED_MAX_TURNS, soft_max_turns=EXTENDED_MAX_TURNS,
                   max_crossings=EXTENDED_MAX_CROSSINGS)


@lru_cache(maxsize=None)
def effective_za(z_over_a: float, x0_g_cm2: float) -> tuple[float, float]:
    """Effective (Z, A) of a material from its <Z/A> and radiation length, inverting the
    radiation-length fit X0 = 716.4 A / (Z (Z+1) ln(287/sqrt Z)) g/cm^2 (PDG 34.4.2).
    Be (0.4438, 65.19) -> Z 4.0; kapton -> ~6.2 (carbon-like); the Ar:CF4 mix -> ~14."""
    target = 716.4 / (z_over_a * x0_g_cm2)
    lo, hi = 1.0, 100.0
    for _ in range(60):
        z = 0.5 * (lo + hi)
        if (z + 1) * np.log(287 / np.sqrt(z)) < target:
            lo = z
        else:
            hi = z
    z = 0.5 * (lo + hi)
    return z, z / z_over_a


def nuclear_interaction_length(mat) -> float:
    """Inelastic nuclear interaction length [g/cm^2] ~ 35 A^(1/3) (PDG: Be 77.8 vs 72.8 here,
    C 85.8 vs 80.1, Si 108.4 vs 106.6, Ar 117.2 vs 119.6). Measured for nucleons at high energy;
    pions and kaons interact ~20-30 % less (their lambda_I is longer): an overestimate for them."""
    _, a = effective_za(mat.z_over_a, mat.x0_g_cm2)
    return 35.0 * a ** (1.0 / 3.0)
