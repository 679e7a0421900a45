"""`knn`: the paper's objective. Each point predicts its k next neighbours with r_j > r_i
(fm4npp.serialize.knn); loss = coordinate MSE per event, event-difficulty weighted
(fm4npp.pretrain.loss). Baseline: every neighbour predicted at the point itself."""

from __future__ import annotations

from fm4npp.pretrain.loss import per_event_mse, pretrain_loss, trivial_predictions
from fm4npp.pretrain.objectives.base import Errors, Objective, model_inputs


class KnnObjective(Objective):
    name = "knn"
    params = ("difficulty_weighting",)
    batch_fields = ("coords", "energy", "mask", "targets", "target_mask", "weight")

    def forward(self, model, batch, step):
        return model(**model_inputs(batch))

    def weight(self, batch):
        return batch["weight"] if self.difficulty_weighting else None

    def loss(self, preds, batch):
        return pretrain_loss(preds, batch["targets"], batch["target_mask"], self.weight(batch)), {}

    def val_errors(self, model, batch, autocast) -> Errors:
        with autocast():
            preds = model(**model_inputs(batch))
        per_event, n = per_event_mse(preds, batch["targets"], batch["target_mask"])
        return {"val_mse": (per_event, n > 0)}

    def baseline_errors(self, batch) -> Errors:
        preds = trivial_predictions(batch["coords"], batch["targets"].shape[2])
        per_event, n = per_event_mse(preds, batch["targets"], batch["target_mask"])
        return {"val_baseline_mse": (per_event, n > 0)}
