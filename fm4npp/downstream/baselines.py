"""Baselines trained on the same events with the same adapters.

- AdapterOnly (``RawSource``): the adapter sees raw inputs only: standardised energy, the
  normalised (r, phi, eta) and, optionally, their NeRF encoding (the FM's input embedding uses
  the same encoding; raw_n_freq 6 vs the presets' 10 scored 0.739 vs 0.725 tracking ARI, so the
  baseline keeps its better setting), whitened like the FM features, so the comparison isolates
  what pretraining adds.
- From scratch (``ScratchSource``): the FM4NPP backbone with random initialisation, trained end
  to end together with the adapter on the labels (no pretraining).
"""

from __future__ import annotations

import torch
from torch import nn

from fm4npp.downstream.features import LayerMix, Whitening, sample_points


def raw_features(coords: torch.Tensor, energy: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(…,3) normalised coords, (…) energy -> (…, 1 + 3 (1 + 2 n_freq)) raw point features."""
    from fm4npp.model.embed import nerf_encoding

    pos = nerf_encoding(coords, n_freq) if n_freq > 0 else coords
    return torch.cat([energy.unsqueeze(-1), pos], dim=-1)


class RawSource(nn.Module):
    kind = "raw"

    def __init__(self, n_freq: int, whiten_eps: float):
        super().__init__()
        self.n_freq = n_freq
        self.d_out = 1 + 3 * (1 + 2 * n_freq)
        self.whitening = Whitening(1, self.d_out, whiten_eps) if whiten_eps > 0 else None

    def fit_whitening(self, events, states, max_points: int) -> None:
        if self.whitening is not None:
            pts = sample_points([raw_features(torch.as_tensor(e["coords"], dtype=torch.float32),
                                              torch.as_tensor(e["energy"], dtype=torch.float32),
                                              self.n_freq) for e in events], max_points)
            self.whitening.fit(pts[:, None])

    def forward(self, batch: dict) -> torch.Tensor:
        x = raw_features(batch["coords"], batch["energy"], self.n_freq)
        return x if self.whitening is None else self.whitening(x.unsqueeze(-2)).squeeze(-2)


class JoinedSource(nn.Module):
    """Several feature sources side by side (the frozen FM's states + the raw inputs)."""

    def __init__(self, *sources: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(sources)
        self.kind = sources[0].kind
        self.d_out = sum(s.d_out for s in sources)

    def fit_whitening(self, events, states, max_points: int) -> None:
        for s in self.parts:
            s.fit_whitening(events, states, max_points)

    def forward(self, batch: dict) -> torch.Tensor:
        return torch.cat([s(batch) for s in self.parts], dim=-1)


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
