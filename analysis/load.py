"""Read the finished trials of scaling studies back from MLflow.

A study (studies/common.py) is one parent run tagged `fm4npp.study_parent` plus one child
run per trial, all tagged `study=<name>`. Only FINISHED child runs count: a driver that died
leaves RUNNING runs behind, and a failed trial's numbers are not a point on any curve.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fm4npp import runs  # noqa: E402

EXPERIMENT = "fm4npp-scaling"  # studies.common.EXPERIMENT (not imported: no Ray needed here)


@dataclass
class TrialRun:
    """One finished trial: its axis values and the numbers Figure 5 plots."""

    run_id: str
    study: str
    kind: str  # model_scaling | data_scaling | compute_scaling
    key: str
    width: str
    fraction: float
    budget: float
    seed: int
    N: float  # parameters
    D: float  # training spacepoints consumed (steps x batch x points per event)
    C: float  # training FLOPs (forward + backward, measured per event)
    val_mse: float
    D_set: float = 0.0  # spacepoints in the run's training set (Figure 5(b)); 0 if unknown


def _number(run, metric: str, tag: str):
    """A run's final metric, else the tag the study driver wrote; None if neither."""
    v = run.data.metrics.get(metric)
    if v is None and tag in run.data.tags:
        try:
            v = float(run.data.tags[tag])
        except ValueError:
            v = None
    return v


def parent_run(study: str, experiment: str = EXPERIMENT):
    """The study's parent run (newest if several), or None."""
    found = runs.find_runs(experiment, f"tags.study = '{study}' and "
                                       f"tags.`fm4npp.study_parent` = '1'")
    return found[0] if found else None


def load_study(study: str, experiment: str = EXPERIMENT) -> list[TrialRun]:
    """Finished trials of `study`, one per trial key (the newest run if a key repeats)."""
    found = runs.find_runs(experiment, f"tags.study = '{study}'", status="FINISHED",
                           max_results=5000)
    out: dict[str, TrialRun] = {}
    for r in found:  # newest first: the first run of a key wins
        t = r.data.tags
        if "trial_key" not in t or t["trial_key"] in out:
            continue
        nums = {k: _number(r, m, k) for k, m in
                (("N", "params_N"), ("D", "spacepoints_D"), ("C", "flops_C"),
                 ("val_mse", "val_mse"))}
        if any(v is None or not v > 0 for v in nums.values()):
            print(f"[load] skipping run {r.info.run_id} ({t['trial_key']}): missing or "
                  f"non-positive {[k for k, v in nums.items() if v is None or not v > 0]}",
                  file=sys.stderr)
            continue
        d_set = _number(r, "train_set_spacepoints", "D_set") or 0.0
        out[t["trial_key"]] = TrialRun(D_set=float(d_set),
            run_id=r.info.run_id, study=study, kind=t.get("study.kind", ""), key=t["trial_key"],
            width=t.get("axis.width", t.get("model", "")),
            fraction=float(t.get("axis.fraction", 1.0)), budget=float(t.get("axis.budget", 1.0)),
            seed=int(t.get("seed", 0)), **{k: float(v) for k, v in nums.items()})
    return sorted(out.values(), key=lambda r: (r.N, r.D, r.C, r.seed))


def list_studies(experiment: str = EXPERIMENT) -> list[str]:
    """Names of all studies that have a parent run."""
    found = runs.find_runs(experiment, "tags.`fm4npp.study_parent` = '1'")
    return sorted({r.data.tags["study"] for r in found if "study" in r.data.tags})
