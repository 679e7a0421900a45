"""Read the finished trials of scaling studies back from MLflow.

A study (fm4npp/study/driver.py) is one parent run tagged `fm4npp.study_parent` plus one child
run per trial, all tagged `study=<name>`. Only FINISHED child runs count: a driver that died
leaves RUNNING runs behind, and a failed trial's numbers are not a point on any curve.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from fm4npp import runs
from fm4npp.study.presets import EXPERIMENT  # plain data: no Ray imported


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
    baseline: float = 0.0  # final val_baseline_mse (constant predictor); 0 if not logged
    steps: int = 0  # total optimizer steps (param `steps`, else the last logged step)
    # (step, val_mse) per validation pass and (step, flops_C) per log line, sorted by step;
    # empty unless load_study(..., histories=True)
    val_history: list[tuple[int, float]] = field(default_factory=list, repr=False)
    flops_history: list[tuple[int, float]] = field(default_factory=list, repr=False)

    @property
    def ratio(self) -> float | None:
        """val_mse / baseline, None when the run logged no baseline."""
        return self.val_mse / self.baseline if self.baseline > 0 else None

    def better_than_baseline(self, max_ratio: float = 1.0) -> bool:
        """A scaling point: val_mse below max_ratio x the constant predictor's (a run that
        logged no baseline, an older one, is kept)."""
        return self.baseline <= 0 or self.val_mse < max_ratio * self.baseline

    def curve(self) -> list[tuple[int, float, float]]:
        """(step, C, val_mse) per validation pass: C from flops_C at that step, else linear in
        step (C_final * step / steps). Without a history, the final point alone."""
        if not self.val_history:
            return [(self.steps, self.C, self.val_mse)]
        flops = dict(self.flops_history)
        total = self.steps or max(s for s, _ in self.val_history)
        out = []
        for step, loss in self.val_history:
            c = flops.get(step)
            if c is None or not c > 0:
                c = self.C * step / total if total > 0 else 0.0
            if c > 0 and loss > 0:
                out.append((int(step), float(c), float(loss)))
        return out or [(self.steps, self.C, self.val_mse)]

    def summary(self) -> dict:
        """The scalar fields (no histories), for JSON."""
        return {k: v for k, v in self.__dict__.items()
                if k not in ("val_history", "flops_history")}


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


def _int(text, default: int = 0) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return default


def load_study(study: str, experiment: str = EXPERIMENT,
               histories: bool = False) -> list[TrialRun]:
    """Finished trials of `study`, one per trial key (the newest run if a key repeats).

    ``histories``: also read each run's val_mse and flops_C histories (two queries a run)."""
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
        baseline = r.data.metrics.get("val_baseline_mse") or 0.0
        extra = {}
        if histories:
            extra = {"val_history": runs.metric_history(r.info.run_id, "val_mse"),
                     "flops_history": runs.metric_history(r.info.run_id, "flops_C")}
        steps = _int(r.data.params.get("steps"))
        if not steps and extra.get("val_history"):
            steps = int(extra["val_history"][-1][0])
        out[t["trial_key"]] = TrialRun(D_set=float(d_set), baseline=float(baseline),
            steps=steps, **extra,
            run_id=r.info.run_id, study=study, kind=t.get("study.kind", ""), key=t["trial_key"],
            width=t.get("axis.width", t.get("model", "")),
            fraction=float(t.get("axis.fraction", 1.0)), budget=float(t.get("axis.budget", 1.0)),
            seed=int(t.get("seed", 0)), **{k: float(v) for k, v in nums.items()})
    return sorted(out.values(), key=lambda r: (r.N, r.D, r.C, r.seed))


def list_studies(experiment: str = EXPERIMENT) -> list[str]:
    """Names of all studies that have a parent run."""
    found = runs.find_runs(experiment, "tags.`fm4npp.study_parent` = '1'")
    return sorted({r.data.tags["study"] for r in found if "study" in r.data.tags})
