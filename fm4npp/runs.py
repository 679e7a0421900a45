"""MLflow helpers: where runs live, one run per training run, parent/child runs for studies.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else an ABSOLUTE ``sqlite:///<data
home>/mlflow.db`` (fm4npp.paths; Ray moves working directories, so a relative URI would scatter
databases). With a local store (SQLite, file) experiments are created with an absolute
artifact location under the storage root, so artifacts of a job that runs from Ray's
temporary ``--working-dir`` copy outlive it; a tracking server decides its own.
SQLite allows one writer at a time: log from one process per database (the Ray Train
controller or the driver, never every worker), or point the URI at an ``mlflow server``.

Everything goes through ``MlflowClient`` with explicit run ids, so no global "active run"
leaks between the runs of a study.
"""

from __future__ import annotations

import json
import os
import re

from fm4npp import paths

RUN_NAME_TAG = "fm4npp.run_name"  # our stable run name: the resume key
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by


_chosen_uri: str | None = None


def use_tracking_uri(uri: str | None) -> None:
    """Point this process's fm4npp MLflow calls at ``uri`` (None: back to the environment's
    choice). A process-local setting, not an environment write: children are not affected."""
    global _chosen_uri
    _chosen_uri = uri


def tracking_uri() -> str:
    return _chosen_uri or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def artifact_location(name: str, storage: str | os.PathLike | None = None) -> str | None:
    """Absolute artifact URI for a new experiment on a local store (None: the server's)."""
    if not tracking_uri().startswith(("sqlite:", "file:", "/")):
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return (paths.storage_root(storage) / paths.MLFLOW_ARTIFACTS / safe).as_uri()


def experiment_id(name: str, storage: str | os.PathLike | None = None) -> str:
    """Id of the experiment called ``name``, created on first use (its artifacts under the
    storage root ``storage``, fm4npp.paths.storage_root)."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location(name, storage))
    except Exception:  # created concurrently by another process
        return c.get_experiment_by_name(name).experiment_id


def start_run(
    name: str,
    params: dict | None = None,
    tags: dict | None = None,
    parent_run_id: str | None = None,
    experiment: str = "fm4npp",
    storage: str | os.PathLike | None = None,
) -> str:
    """Create a run (child of ``parent_run_id`` if given); log params and tags; return its id.
    ``storage``: the storage root a new experiment's artifacts go under."""
    all_tags = {RUN_NAME_TAG: name, **(tags or {})}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    run = client().create_run(experiment_id(experiment, storage), run_name=name, tags=all_tags)
    if params:
        log_params(run.info.run_id, params)
    return run.info.run_id


def get_or_start_run(name: str, params=None, tags=None, parent_run_id=None,
                     experiment: str = "fm4npp", storage=None) -> tuple[str, bool]:
    """The run tagged with our stable ``name`` in ``experiment`` (and under ``parent_run_id``,
    if given: two studies may each have a trial of the same name) if there is one (a resumed
    training run keeps its MLflow run), else a new one. Returns (run_id, resumed)."""
    where = f"tags.`{RUN_NAME_TAG}` = '{name}'"
    if parent_run_id:
        where += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    runs = find_runs(experiment, where)
    if not runs:
        return start_run(name, params, tags, parent_run_id, experiment, storage), False
    run_id = runs[0].info.run_id
    c = client()
    c.update_run(run_id, status="RUNNING")
    for k, v in (tags or {}).items():
        c.set_tag(run_id, k, v)
    if params:
        old = runs[0].data.params
        # MLflow refuses to change a logged param: log only the new keys, flag changes
        changed = {k: v for k, v in _flat(params).items() if k in old and old[k] != v}
        log_params(run_id, {k: v for k, v in _flat(params).items() if k not in old})
        if changed:
            c.set_tag(run_id, "fm4npp.params_changed_on_resume", json.dumps(changed)[:5000])
    return run_id, True


def _flat(params: dict) -> dict[str, str]:
    return {str(k): str(v)[:6000] for k, v in params.items()}


def log_params(run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in _flat(params).items()]
    c = client()
    for i in range(0, len(items), 100):  # MLflow's batch limit
        c.log_batch(run_id, params=items[i : i + 100])


def log_metrics(run_id: str, metrics: dict, step: int) -> None:
    log_metrics_history(run_id, [{**metrics, "step": step}])


def log_metrics_history(run_id: str, history: list[dict], step_key: str = "step") -> None:
    """Log a list of metric dicts, each holding its step under ``step_key``; non-numeric
    values are skipped."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = []
    for row in history:
        step = int(row[step_key])
        for k, v in row.items():
            if k == step_key or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            items.append(Metric(k, float(v), now, step))
    c = client()
    for i in range(0, len(items), 1000):  # MLflow's batch limit
        c.log_batch(run_id, metrics=items[i : i + 1000])


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, sorted by step (the last value wins per step)."""
    by_step = {}
    for m in sorted(client().get_metric_history(run_id, key), key=lambda m: m.timestamp):
        by_step[m.step] = m.value
    return sorted(by_step.items())


def find_runs(experiment: str, filter_string: str = "", status: str | None = None,
              max_results: int = 1000):
    """Runs of ``experiment`` matching an MLflow filter string (e.g. "tags.study = 'x'"),
    optionally only those with ``status`` (e.g. "FINISHED"); newest first."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    if status:
        clause = f"attributes.status = '{status}'"
        filter_string = f"{filter_string} and {clause}" if filter_string else clause
    return c.search_runs([exp.experiment_id], filter_string=filter_string,
                         max_results=max_results, order_by=["attributes.start_time DESC"])


def log_dict(run_id: str, obj: dict, artifact_file: str) -> None:
    client().log_dict(run_id, obj, artifact_file)


def log_figure(run_id: str, fig, artifact_file: str) -> None:
    client().log_figure(run_id, fig, artifact_file)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


def ui_command() -> str:
    return f"mlflow ui --backend-store-uri {tracking_uri()}"


def describe(run_id: str, experiment: str) -> str:
    """Where to find a run: printed by the CLI."""
    return (f"MLflow tracking URI: {tracking_uri()}\nexperiment: {experiment}\n"
            f"run id: {run_id}\nview with: {ui_command()}")
