"""Validation of a pretraining worker: the objective's metrics over the validation events,
split between ranks and summed; and the all-reduce the loop also uses for its counters."""

from __future__ import annotations


def allreduce_sum(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def evaluate(model, objective, events: list[dict], batch_size: int, rank: int, world: int,
             device, autocast, baseline: bool = False) -> dict[str, float]:
    """The objective's validation metrics (``baseline``: its no-information predictor's,
    ``model`` unused) over all of ``events``: for each, the unweighted mean over events of the
    event's mean squared error (fm4npp.pretrain.objectives.base)."""
    import torch

    from fm4npp.data.pipeline import collate

    names = objective.baseline_names if baseline else objective.val_names
    sums = {name: [0.0, 0] for name in names}  # every rank, even one without events, reduces all
    mine = events[rank::world]
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    with torch.no_grad():
        for i in range(0, len(mine), batch_size):
            b = {k: v.to(device) for k, v in collate(mine[i : i + batch_size]).items()}
            errors = (objective.baseline_errors(b) if baseline
                      else objective.val_errors(model, b, autocast))
            for name, (per_event, has) in errors.items():
                sums[name][0] += float(per_event[has].sum())
                sums[name][1] += int(has.sum())
    if model is not None and was_training:
        model.train()
    flat = allreduce_sum([v for name in names for v in sums[name]], device)
    return {name: flat[2 * i] / max(flat[2 * i + 1], 1) for i, name in enumerate(names)}
