"""Baselines trained on the same events with the same adapters.

- AdapterOnly (``RawSource``): the adapter sees raw inputs only: standardised energy, the
  normalised (r, phi, eta) and, optionally, their NeRF encoding (the same encoding the FM's
  input embedding uses), so the comparison isolates what pretraining adds.
- From scratch (``ScratchSource``): the FM4NPP backbone with random initialisation, trained end
  to end together with the adapter on the labels (no pretraining).
"""

from __future__ import annotations

import torch
from torch import nn

from fm4npp.downstream.features import LayerMix


def raw_features(coords: torch.Tensor, energy: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(…,3) normalised coords, (…) energy -> (…, 1 + 3 (1 + 2 n_freq)) raw point features."""
    from fm4npp.model.embed import nerf_encoding

    pos = nerf_encoding(coords, n_freq) if n_freq > 0 else coords
    return torch.cat([energy.unsqueeze(-1), pos], dim=-1)


class RawSource(nn.Module):
    kind = "raw"

    def __init__(self, n_freq: int = 6):
        super().__init__()
        self.n_freq = n_freq
        self.d_out = 1 + 3 * (1 + 2 * n_freq)

    def forward(self, batch: dict) -> torch.Tensor:
        return raw_features(batch["coords"], batch["energy"], self.n_freq)


class ScratchSource(nn.Module):
    """A randomly initialised FM4NPP trained end to end; layers mixed as for the frozen FM."""

    kind = "scratch"

    def __init__(self, model_cfg):
        super().__init__()
        from fm4npp.model.backbone import FM4NPP

        self.backbone = FM4NPP(model_cfg)
        self.mix = LayerMix(model_cfg.n_layers + 1)  # + the embedding
        self.d_out = model_cfg.d_model

    def forward(self, batch: dict) -> torch.Tensor:
        _, hidden = self.backbone(batch["coords"], batch["energy"], batch["mask"], return_hidden=True)
        return self.mix(torch.stack(hidden, dim=2))
