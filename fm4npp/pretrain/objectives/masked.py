"""`masked`: masked point modelling. A fraction of each event's real points is hidden (their
inputs replaced by the model's mask token) and the model reconstructs their normalised
(r, phi, eta) and standardised energy from the others; loss = per-event mean over the hidden
points of the squared error summed over the four values, averaged over events.

No event-difficulty weights: they measure how hard the kNN targets of an event are (mean
neighbour distance), not how hard its points are to reconstruct.

Baseline: each hidden point predicted as the mean of its event's visible points (the best
constant per event), on the same hidden points as the model's validation.
"""

from __future__ import annotations

from fm4npp.pretrain.objectives.base import (Errors, Objective, event_mean, hidden_points, model_inputs,
                                             point_values)

HEAD = "masked"  # the model head: 3 coordinates + energy per point


class MaskedObjective(Objective):
    name = "masked"
    params = ("mask_fraction",)
    bidirectional_ok = True
    mask_token = True
    uses_knn_head = False
    batch_fields = ("coords", "energy", "mask", "event_id")
    metric_names = ("masked_coord", "masked_energy")

    def check(self):
        if not 0.0 < self.mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in (0, 1), got {self.mask_fraction}")

    def output_heads(self, k):
        return {HEAD: 4}

    def hidden(self, batch, step):
        return hidden_points(batch, self.mask_fraction, self.seed, step)

    def forward(self, model, batch, step):
        hide = self.hidden(batch, step)
        out = model(**model_inputs(batch), input_mask=hide,
                    return_heads=True)
        return {**out, "hidden": hide}

    def errors(self, outputs, batch):
        """Per-event (total, coordinate part, energy part) over the hidden points, and counts."""
        sq = (outputs[HEAD].float() - point_values(batch)) ** 2  # (B, L, 4)
        hide = outputs["hidden"]
        coord, n = event_mean(sq[..., :3].sum(-1), hide)
        energy, _ = event_mean(sq[..., 3], hide)
        return coord + energy, coord, energy, n

    def loss(self, outputs, batch):
        total, coord, energy, _ = self.errors(outputs, batch)
        return total.mean(), {"masked_coord": coord.mean().detach(),
                              "masked_energy": energy.mean().detach()}

    def val_errors(self, model, batch, autocast) -> Errors:
        with autocast():
            outputs = self.forward(model, batch, None)
        total, _, _, n = self.errors(outputs, batch)
        return {"val_mse": (total, n > 0)}

    def baseline_errors(self, batch) -> Errors:
        hide = self.hidden(batch, None)
        values = point_values(batch)
        visible = batch["mask"] & ~hide
        mean = (values * visible.unsqueeze(-1)).sum(1) / visible.sum(1, keepdim=True).clamp(min=1)
        per_event, n = event_mean(((values - mean.unsqueeze(1)) ** 2).sum(-1), hide)
        return {"val_baseline_mse": (per_event, n > 0)}

