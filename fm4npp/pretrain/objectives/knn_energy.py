"""`knn_energy`: `knn` plus the neighbours' standardised energies. Each (point, neighbour)
term's squared error is the coordinate one plus the energy one; per-event mean over terms,
event-difficulty weighted, as in `knn`. The serialization provides the energies as
``target_energy`` (B, L, k) next to ``targets``.

Baseline: neighbours at the point itself (as `knn`), with the event's mean energy.
"""

from __future__ import annotations

from fm4npp.pretrain.loss import trivial_predictions
from fm4npp.pretrain.objectives.base import Errors, Objective, event_mean, weighted_mean, model_inputs

HEAD = "knn_energy"  # k energies per point, one per predicted neighbour


class KnnEnergyObjective(Objective):
    name = "knn_energy"
    params = ("difficulty_weighting",)
    batch_fields = ("coords", "energy", "mask", "targets", "target_mask", "weight",
                    "target_energy")
    metric_names = ("knn", "energy")
    val_names = ("val_mse", "val_knn_mse")
    baseline_names = ("val_baseline_mse", "val_knn_baseline_mse")

    def output_heads(self, k):
        return {HEAD: k}

    def forward(self, model, batch, step):
        return model(**model_inputs(batch), return_heads=True)

    @staticmethod
    def errors(coords, energies, batch):
        """Per-event (total, coordinate part, energy part) over the neighbour terms, and counts."""
        where = batch["target_mask"]
        coord, n = event_mean(((coords.float() - batch["targets"].float()) ** 2).sum(-1), where)
        energy, _ = event_mean((energies.float() - batch["target_energy"].float()) ** 2, where)
        return coord + energy, coord, energy, n

    def loss(self, outputs, batch):
        total, coord, energy, _ = self.errors(outputs["knn"], outputs[HEAD], batch)
        weight = batch["weight"] if self.difficulty_weighting else None
        return weighted_mean(total, weight), {"knn": coord.mean().detach(),
                                              "energy": energy.mean().detach()}

    def val_errors(self, model, batch, autocast) -> Errors:
        with autocast():
            outputs = self.forward(model, batch, None)
        total, coord, _, n = self.errors(outputs["knn"], outputs[HEAD], batch)
        return {"val_mse": (total, n > 0), "val_knn_mse": (coord, n > 0)}

    def baseline_errors(self, batch) -> Errors:
        k = batch["targets"].shape[2]
        mean_energy, _ = event_mean(batch["energy"], batch["mask"])
        energies = mean_energy[:, None, None].expand(*batch["target_mask"].shape)
        total, coord, _, n = self.errors(trivial_predictions(batch["coords"], k), energies, batch)
        return {"val_baseline_mse": (total, n > 0), "val_knn_baseline_mse": (coord, n > 0)}
