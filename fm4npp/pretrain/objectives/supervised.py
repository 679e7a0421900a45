"""`supervised`: multi-task training on the per-hit truth labels (PID class, noise flag). An
upper reference for what the backbone can learn with every label, NOT a pretraining claim:
its runs are tagged ``fm4npp.pretraining_claim=false`` in MLflow. Bidirectional backbones are
fine: the labels are no input of any point.

loss = per-event mean cross-entropy (nats) of the PID head plus that of the noise head,
averaged over events; validation reports it as ``val_mse`` (the name every objective shares;
here a cross-entropy). Baseline: each event's own label frequencies as the prediction of
every point (the best constant per event), i.e. the entropy of its label distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fm4npp.metrics.classification import NOISE_NAMES, PID_NAMES
from fm4npp.pretrain.objectives.base import Errors, Objective, event_mean, model_inputs

TASKS = {"pid": ("pid_class", len(PID_NAMES)), "noise": ("noise", len(NOISE_NAMES))}


class SupervisedObjective(Objective):
    name = "supervised"
    bidirectional_ok = True
    uses_knn_head = False
    pretraining_claim = False
    batch_fields = ("coords", "energy", "mask", "pid_class", "noise")
    metric_names = tuple(TASKS)

    def output_heads(self, k):
        return {head: n for head, (_, n) in TASKS.items()}

    def forward(self, model, batch, step):
        return model(**model_inputs(batch), return_heads=True)

    @staticmethod
    def errors(log_probs: dict, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per task: per-event mean cross-entropy over labelled real points, and counts."""
        out = {}
        for head, (field, _) in TASKS.items():
            labels = batch[field].long()
            where = batch["mask"] & (labels >= 0)
            nll = -log_probs[head].gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            out[head] = event_mean(nll, where)
        return out

    def _log_probs(self, outputs):
        return {head: F.log_softmax(outputs[head].float(), dim=-1) for head in TASKS}

    def loss(self, outputs, batch):
        per_task = self.errors(self._log_probs(outputs), batch)
        total = sum(v for v, _ in per_task.values())
        return total.mean(), {head: v.mean().detach() for head, (v, _) in per_task.items()}

    def val_errors(self, model, batch, autocast) -> Errors:
        with autocast():
            outputs = self.forward(model, batch, None)
        per_task = self.errors(self._log_probs(outputs), batch)
        return {"val_mse": _total(per_task)}

    def baseline_errors(self, batch) -> Errors:
        log_probs = {}
        for head, (field, n) in TASKS.items():
            labels = batch[field].long()
            where = (batch["mask"] & (labels >= 0)).unsqueeze(-1)
            counts = (F.one_hot(labels.clamp(min=0), n) * where).sum(1, keepdim=True).float()
            freq = counts / counts.sum(-1, keepdim=True).clamp(min=1)
            log_probs[head] = freq.clamp(min=1e-12).log().expand(*labels.shape, n)
        return {"val_baseline_mse": _total(self.errors(log_probs, batch))}


def _total(per_task: dict) -> tuple[torch.Tensor, torch.Tensor]:
    total = sum(v for v, _ in per_task.values())
    has = torch.stack([n > 0 for _, n in per_task.values()]).all(0)
    return total, has
