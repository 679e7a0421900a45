"""Pretraining objectives, chosen by name (PretrainConfig.objective, `fm4npp pretrain
--objective NAME`). Each is a small module behind the interface of
fm4npp.pretrain.objectives.base.Objective; a new objective is a new module and one entry in
OBJECTIVES, never a branch in the training loop.

An objective's parameters are PretrainConfig fields (their defaults live there); a
checkpoint records the objective as ``{"name": ..., <its parameters>}`` (``record``).
"""

from __future__ import annotations

from fm4npp.pretrain.objectives.base import Objective
from fm4npp.pretrain.objectives.hybrid import HybridObjective
from fm4npp.pretrain.objectives.knn import KnnObjective
from fm4npp.pretrain.objectives.knn_energy import KnnEnergyObjective
from fm4npp.pretrain.objectives.masked import MaskedObjective
from fm4npp.pretrain.objectives.supervised import SupervisedObjective

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (KnnObjective, KnnEnergyObjective, MaskedObjective, HybridObjective,
                              SupervisedObjective)
}


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known objectives: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def bidirectional_objectives() -> list[str]:
    return [name for name, cls in OBJECTIVES.items() if cls.bidirectional_ok]


def build_objective(cfg) -> Objective:
    """The objective of a PretrainConfig (its name, parameters and seed)."""
    cls = objective_class(cfg.objective)
    return cls(seed=cfg.seed, **{p: getattr(cfg, p) for p in cls.params})


def objective_from_record(record: dict, seed: int = 0) -> Objective:
    """The objective a checkpoint's ``objective`` record describes."""
    params = {k: v for k, v in record.items() if k != "name"}
    return objective_class(record["name"])(seed=seed, **params)


def objective_tags(cfg) -> dict[str, str]:
    """MLflow tags of a run's objective; ``fm4npp.pretraining_claim`` is "false" for references
    trained on labels (supervised), whose numbers say nothing about pretraining."""
    claim = objective_class(cfg.objective).pretraining_claim
    return {"objective": cfg.objective, "bidirectional": str(cfg.bidirectional).lower(),
            "fm4npp.pretraining_claim": str(claim).lower()}


def check_backbone(objective: Objective, bidirectional: bool) -> None:
    """Refuse a bidirectional backbone for an objective whose targets it would read."""
    if bidirectional and not objective.bidirectional_ok:
        raise ValueError(
            f"objective {objective.name!r} predicts each point's next neighbours, which come "
            f"later in the scan: a bidirectional backbone reads them before predicting them (the "
            f"loss would leak its own targets); bidirectional works with: "
            f"{', '.join(bidirectional_objectives())}")
