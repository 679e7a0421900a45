"""`hybrid`: `knn` and `masked` from one forward pass with hidden points;
loss = (1 - w) knn + w masked, w = ``hybrid_weight``.

The kNN terms of hidden points are left out: such a point does not know where it is, so its
neighbours' positions are the masked head's problem, not the kNN head's. Validation reports
``val_mse`` as `knn` does (clean inputs, every term), so hybrid runs compare with knn runs,
and the masked part beside it as ``val_masked_mse``.
"""

from __future__ import annotations

from fm4npp.pretrain.loss import pretrain_loss
from fm4npp.pretrain.objectives.base import Errors, Objective
from fm4npp.pretrain.objectives.knn import KnnObjective
from fm4npp.pretrain.objectives.masked import MaskedObjective


class HybridObjective(Objective):
    name = "hybrid"
    params = ("difficulty_weighting", "mask_fraction", "hybrid_weight")
    mask_token = True
    batch_fields = tuple(dict.fromkeys(KnnObjective.batch_fields + MaskedObjective.batch_fields))
    metric_names = ("knn", "masked_coord", "masked_energy")
    val_names = ("val_mse", "val_masked_mse")
    baseline_names = ("val_baseline_mse", "val_masked_baseline_mse")

    def check(self):
        if not 0.0 <= self.hybrid_weight <= 1.0:
            raise ValueError(f"hybrid_weight must be in [0, 1], got {self.hybrid_weight}")
        self.knn = KnnObjective(self.seed, difficulty_weighting=self.difficulty_weighting)
        self.masked = MaskedObjective(self.seed, mask_fraction=self.mask_fraction)

    def output_heads(self, k):
        return self.masked.output_heads(k)

    def forward(self, model, batch, step):
        return self.masked.forward(model, batch, step)

    def loss(self, outputs, batch):
        terms = batch["target_mask"] & ~outputs["hidden"].unsqueeze(-1)
        knn = pretrain_loss(outputs["knn"], batch["targets"], terms, self.knn.weight(batch))
        masked, parts = self.masked.loss(outputs, batch)
        w = self.hybrid_weight
        return (1.0 - w) * knn + w * masked, {"knn": knn.detach(), **parts}

    def val_errors(self, model, batch, autocast) -> Errors:
        masked = self.masked.val_errors(model, batch, autocast)["val_mse"]
        return {**self.knn.val_errors(model, batch, autocast), "val_masked_mse": masked}

    def baseline_errors(self, batch) -> Errors:
        masked = self.masked.baseline_errors(batch)["val_baseline_mse"]
        return {**self.knn.baseline_errors(batch), "val_masked_baseline_mse": masked}
