"""The interface every pretraining objective implements, and the pieces several share.

An objective decides how the model is run on a batch (``forward``), what that costs
(``loss``: a scalar and a few named parts for the logs), how validation scores the model
(``val_errors``) and what a predictor without information scores on the same events
(``baseline_errors``): the studies compare every run to its own baseline, so the two must
be computed on the same points with the same formula.

Validation numbers are per-event mean squared errors, averaged over events (every event
counts equally, whatever its size): ``val_errors`` returns, per metric, the per-event
errors (B,) and which events have any term (B,) bool; fm4npp.pretrain.validation sums
them over events and ranks.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

Errors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # metric -> (per-event, has terms)


class Objective:
    name: ClassVar[str] = ""
    # PretrainConfig fields that define the objective: recorded with every checkpoint
    params: ClassVar[tuple[str, ...]] = ()
    # Safe with a backbone that also reads the event backwards (ModelConfig.bidirectional)?
    # Not for objectives predicting later points of the scan: the backward scan reads them.
    bidirectional_ok: ClassVar[bool] = False
    mask_token: ClassVar[bool] = False  # hides points' inputs behind the model's mask token
    uses_knn_head: ClassVar[bool] = True  # False: DDP must allow that head's unused weights
    pretraining_claim: ClassVar[bool] = True  # False: a reference using labels (MLflow tag)
    batch_fields: ClassVar[tuple[str, ...]] = ("coords", "energy", "mask")
    metric_names: ClassVar[tuple[str, ...]] = ()  # the parts ``loss`` reports, in this order
    val_names: ClassVar[tuple[str, ...]] = ("val_mse",)
    baseline_names: ClassVar[tuple[str, ...]] = ("val_baseline_mse",)

    def __init__(self, seed: int = 0, **params):
        # no defaults here: they live in PretrainConfig (build_objective) and the record
        if set(params) != set(self.params):
            raise TypeError(f"objective {self.name!r} takes exactly {list(self.params)}, "
                            f"got {sorted(params)}")
        self.seed = int(seed)
        for key, value in params.items():
            setattr(self, key, value)
        self.check()

    def check(self) -> None:
        """Refuse bad parameter values (ValueError naming the key)."""

    def output_heads(self, k: int) -> dict[str, int]:
        """The extra model heads this objective trains: {name: outputs per point}."""
        return {}

    def record(self) -> dict:
        return {"name": self.name, **{p: getattr(self, p) for p in self.params}}

    def check_batch(self, batch: dict) -> None:
        missing = [f for f in self.batch_fields if f not in batch]
        if missing:
            raise ValueError(
                f"objective {self.name!r} needs the batch field(s) {missing}, which the data "
                f"pipeline does not provide (have: {sorted(batch)})")

    # -- what each objective defines ----------------------------------------------------
    def forward(self, model, batch: dict, step: int | None):
        """Run the model as this objective needs (step None: validation). Called under autocast."""
        raise NotImplementedError

    def loss(self, outputs, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(scalar loss to minimise, {name in metric_names: detached scalar})."""
        raise NotImplementedError

    def val_errors(self, model, batch: dict, autocast) -> Errors:
        raise NotImplementedError

    def baseline_errors(self, batch: dict) -> Errors:
        raise NotImplementedError


# -- shared pieces ------------------------------------------------------------------------
def event_mean(values: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-event mean of ``values`` over the True entries of ``where`` (same shape, (B, ...)),
    in fp32: (mean (B,), count (B,)); 0 and 0 for events without any."""
    m = where.to(torch.float32)
    dims = tuple(range(1, values.dim()))
    n = m.sum(dim=dims)
    return (values.float() * m).sum(dim=dims) / n.clamp(min=1), n


def weighted_mean(per_event: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The paper's 1/B sum_i w_i L_i (w None: the plain mean over events)."""
    if weight is not None:
        per_event = per_event * weight.to(per_event.dtype)
    return per_event.mean()


def hidden_points(batch: dict, fraction: float, seed: int, step: int | None) -> torch.Tensor:
    """(B, L) bool: the points a masking objective hides. Exactly round(fraction * n) of an
    event's n real points (at least 1, at most n - 1: one must stay visible), drawn by a
    generator seeded with (seed, step, event id), so the draw does not depend on which batch,
    rank or number of workers the event meets; validation (step None) draws once per event."""
    mask = batch["mask"]
    out = np.zeros(tuple(mask.shape), dtype=bool)
    for row, (n, event_id) in enumerate(zip(mask.sum(1).tolist(), batch["event_id"].tolist())):
        eid = int(event_id) & 0xFFFFFFFFFFFFFFFF
        key = [seed & 0xFFFFFFFF, 1, eid] if step is None else [seed & 0xFFFFFFFF, 0, int(step), eid]
        m = min(max(1, round(fraction * n)), n - 1)
        if m > 0:
            out[row, np.random.default_rng(key).choice(n, m, replace=False)] = True
    return torch.from_numpy(out).to(mask.device)


def model_inputs(batch: dict) -> dict:
    """The model's inputs from a batch: coords, energy, mask and each point's subsystem id
    (absent from a batch that does not carry it: the model then takes every point as TPC)."""
    out = {"coords": batch["coords"], "energy": batch["energy"], "mask": batch["mask"]}
    if "subsystem" in batch:
        out["subsystem"] = batch["subsystem"]
    return out


def point_values(batch: dict) -> torch.Tensor:
    """(B, L, 4): each point's normalised (r, phi, eta) and standardised energy."""
    return torch.cat([batch["coords"].float(), batch["energy"].float().unsqueeze(-1)], dim=-1)
