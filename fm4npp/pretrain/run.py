"""One pretraining run: Ray Data pipeline -> Ray Train TorchTrainer -> MLflow.

``run_pretraining(cfg)`` is what the CLI and the studies call. The Ray Train run directory is
``<storage_path>/<run_name>``; starting again with the same name resumes from its latest
checkpoint (Ray Train V2 restores a run by (storage_path, name)) and keeps logging into the
same MLflow run. Metrics reach MLflow from ONE process: the Ray Train controller, through
``MLflowCallback`` (workers only call ``ray.train.report``), so SQLite sees a single writer.
"""

from __future__ import annotations

import json
from pathlib import Path

from fm4npp import runs
from fm4npp.data import mixture
from fm4npp.files import atomic_write_json
from fm4npp.pretrain.config import PretrainConfig
from fm4npp.pretrain.checkpoint import PRETRAINED_DIR
from fm4npp.pretrain.inputs import (RefusedError, bins_hash, bins_sources, check_inputs,  # noqa: F401
                                    components, load_bins, mixture_record)
from fm4npp.pretrain.sources import build_mixture, mixture_dataset, shared_mixture, train_keys
from fm4npp.spec import SPEC_FILE, RunSpec

RUN_INFO = "fm4npp_run.json"  # beside Ray's files in the run dir: bins hash, MLflow run id


def _user_callback_base():
    import ray.train

    return ray.train.UserCallback


def make_mlflow_callback(run_id: str, tracking_uri: str):
    """A Ray Train callback (runs in the controller) logging rank 0's reported metrics."""

    class MLflowCallback(_user_callback_base()):
        def __init__(self):
            self.run_id, self.uri, self.pending = run_id, tracking_uri, []

        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metrics[0] and "step" in metrics[0]:
                self.pending.append(dict(metrics[0]))
            if not self.pending:
                return
            runs.use_tracking_uri(self.uri)
            try:
                runs.log_metrics_history(self.run_id, self.pending)
                self.pending = []
            except Exception as exc:  # e.g. SQLite busy: keep the rows for the next report,
                import logging      # never fail the training run over a metrics write

                logging.getLogger(__name__).warning("MLflow logging deferred: %s", exc)

    return MLflowCallback()


# -- data -----------------------------------------------------------------------------------
def pipeline_config(cfg: PretrainConfig, bins):
    """The data pipeline's config: the grid, k, detector and energy transform the bins were
    fitted with, plus the run's order, point cap and data fraction."""
    from fm4npp.serialize.config import PipelineConfig, SerializeConfig

    fitted = bins.content["config"]
    scfg = {"k": int(fitted["k"]), "n_bins": tuple(fitted["n_bins"]),
            "detector": fitted["detector"], "energy_transform": fitted["energy_transform"]}
    if cfg.order:
        scfg["order"] = cfg.order
    if cfg.max_points >= 0:
        scfg["max_points"] = cfg.max_points
    return PipelineConfig(serialize=SerializeConfig(**scfg), data_fraction=cfg.data_fraction)


def build_datasets(cfg: PretrainConfig) -> dict:
    """{"train", "val"} Ray Datasets of serialized events (a mixture: "train" for all
    components or "train_0", "train_1", ... one per component (sources.train_keys), and "val",
    the components' val splits concatenated). Validation (capped
    at ``val_events``, split between components by weight) is materialized once on the driver;
    so is the training split in "memory" mode (every worker reads it without serializing
    again); "stream" mode streams it."""
    from fm4npp.data import pipeline

    comps, bins_list = components(cfg), load_bins(cfg)
    pcfgs = [pipeline_config(cfg, b) for b in bins_list]
    keep = (lambda ds: ds.materialize()) if cfg.data_mode == "memory" else (lambda ds: ds)
    if not mixture.is_mixture(cfg.data):
        val = pipeline.serialized_dataset(cfg.data, "val", pcfgs[0], bins_list[0])
        train = pipeline.serialized_dataset(cfg.data, "train", pcfgs[0], bins_list[0])
        return {"train": keep(train), "val": (val.limit(cfg.val_events) if cfg.val_events else val).materialize()}
    vals = build_mixture(comps, "val", pcfgs, bins_list)
    if cfg.val_events:
        caps = mixture.apportion(cfg.val_events, [c.weight for c in comps])
        vals = [v.limit(int(n)) for v, n in zip(vals, caps) if n > 0]
    vals = [v.materialize() for v in vals]
    if shared_mixture(cfg):  # memory: each component once; a stream cycles them as drawn
        window = mixture.WINDOW_BATCHES * cfg.batch_size if cfg.data_mode == "stream" else None
        trains = [mixture_dataset(comps, "train", pcfgs, bins_list, window=window)]
    else:
        trains = build_mixture(comps, "train", pcfgs, bins_list)
    return {"val": vals[0].union(*vals[1:]).materialize() if len(vals) > 1 else vals[0],
            **{key: keep(ds) for key, ds in zip(train_keys(cfg), trains)}}


# -- trainer --------------------------------------------------------------------------------
def run_spec(cfg: PretrainConfig) -> RunSpec:
    """The spec of resolved run ``cfg`` (fm4npp.spec): its config, its serialization (a mixture:
    the first component's; the others differ only in detector and bins, both in the mixture
    record) and the model it trains."""
    from fm4npp.pretrain.model_spec import model_config_for

    scfg = pipeline_config(cfg, load_bins(cfg)[0]).serialize
    return RunSpec(pretrain=cfg, serialize=scfg, model=model_config_for(cfg, k=scfg.k))


def build_trainer(cfg: PretrainConfig, callbacks=None, datasets=None, bins_hash_: str = ""):
    """The TorchTrainer of a resolved config. ``callbacks`` go to Ray Train's RunConfig (the
    studies pass a TuneReportCallback); ``datasets`` default to ``build_datasets(cfg)``."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from fm4npp.pretrain.loop import train_loop_per_worker

    cfg = cfg.resolved()
    bins_hash_ = bins_hash_ or bins_hash(cfg)
    if cfg.data_mode == "stream":
        _check_stream_fits(cfg)
    res = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        res["GPU"] = 1
    # what the data were serialized with goes into the checkpoint: the downstream adapters
    # must serialize their events exactly the same way
    serialize = run_spec(cfg).serialize.to_dict()
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"pretrain": cfg.to_dict(), "bins_hash": bins_hash_,
                           "serialize": serialize, "mixture": mixture_record(cfg),
                           "bins_sources": bins_sources(cfg)},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker=res),
        run_config=ray.train.RunConfig(
            name=cfg.run_name,
            storage_path=cfg.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            callbacks=list(callbacks or []),
        ),
        datasets=datasets if datasets is not None else build_datasets(cfg),
        # "memory": every worker sees the whole materialized split and picks its slice of each
        # global batch (loop.py); "stream": Ray Data splits the training set between workers
        dataset_config=ray.train.DataConfig(
            datasets_to_split=train_keys(cfg) if cfg.data_mode == "stream" else []),
    )


def _check_stream_fits(cfg: PretrainConfig) -> None:
    """Streaming runs Ray Data (Parquet reads at 1 CPU each, serialization tasks) next to the
    training workers; if the workers leave less than that, Ray waits forever. Refuse instead."""
    import ray

    from fm4npp.serialize.config import PipelineConfig

    if not ray.is_initialized():
        return
    pc = PipelineConfig()  # each component of a mixture has its own task pool
    need = cfg.workers * cfg.cpus_per_worker + len(train_keys(cfg)) * pc.serialize_concurrency * pc.serialize_num_cpus + 1.0
    have = ray.cluster_resources().get("CPU", 0.0)
    if need > have:
        raise RefusedError(
            f"data_mode=stream needs {need:g} CPUs ({cfg.workers} workers x "
            f"{cfg.cpus_per_worker:g} + Ray Data's serialization tasks and a 1-CPU Parquet "
            f"read) but the cluster has {have:g}: lower cpus_per_worker or workers, or use "
            f"data_mode=memory")


def _check_run_dir(cfg: PretrainConfig, h: str) -> dict:
    """Refuse to resume a run whose checkpoints were made with other bins."""
    info_path = Path(cfg.storage_path) / cfg.run_name / RUN_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("bins_hash") != h:
            raise RefusedError(
                f"run {cfg.run_name!r} in {info_path.parent} was trained with serialization bins "
                f"of hash {info.get('bins_hash')}, but {cfg.bins or 'the mixture'} has hash {h}; refusing to "
                f"resume (use another run name for the new bins)")
        return info
    return {}


def _write_run_info(cfg: PretrainConfig, info: dict) -> None:
    path = Path(cfg.storage_path) / cfg.run_name / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, info, newline=False, indent=1)


def _log_artifacts(run_id: str, cfg: PretrainConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("train_loss", "-"), ("val_mse", "o-"), ("val_baseline_mse", "--")):
        hist = runs.metric_history(run_id, key)
        if hist:
            ax.plot(*zip(*hist), style, label=key, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (normalised coords$^2$)")
    ax.set_yscale("log")
    ax.set_title(cfg.run_name, fontsize=9)
    ax.legend()
    fig.tight_layout()
    runs.log_figure(run_id, fig, "loss_curve.png")
    plt.close(fig)


def judge_against_baseline(run_id: str, run_name: str, metrics: dict) -> float | None:
    """val_mse / val_baseline_mse of a finished run, logged as ``val_mse_over_baseline``; a run
    that ends no better than predicting a constant warns and is tagged
    ``fm4npp.worse_than_baseline`` (its numbers say nothing about scaling)."""
    import logging

    val, base = metrics.get("val_mse"), metrics.get("val_baseline_mse")
    if val is None or not base:
        return None
    ratio = float(val) / float(base)
    c = runs.client()
    runs.log_metrics(run_id, {"val_mse_over_baseline": ratio}, step=int(metrics.get("step", 0)))
    worse = ratio >= 1.0
    c.set_tag(run_id, "fm4npp.worse_than_baseline", str(worse).lower())
    if worse:
        logging.getLogger(__name__).warning(
            "pretraining run %s ended WORSE than the constant predictor: val MSE %.4g vs %.4g "
            "(%.2fx); more steps, a lower lr or more data are needed before this run means "
            "anything", run_name, val, base, ratio)
    return ratio


def run_pretraining(cfg: PretrainConfig, callbacks=None, parent_run_id: str | None = None,
                    tags: dict | None = None, datasets: dict | None = None,
                    skip_validation: bool = False) -> dict:
    """Train (or resume) one run; returns {val_mse, val_baseline_mse, N, D, C, events, steps,
    checkpoint, pretrained (fm4npp.model.io directory of the final model), run_dir, run_name,
    mlflow_run_id, experiment, tracking_uri}.

    ``callbacks``: extra Ray Train callbacks (e.g. Tune's); ``parent_run_id``/``tags``: MLflow
    nesting for studies; ``datasets``: ``build_datasets(cfg)`` output to share between runs
    on the same data (it must come from the same data, bins, fraction and order).
    ``skip_validation``: see :func:`check_inputs`."""
    cfg = cfg.resolved()
    check_inputs(cfg, skip_validation)  # before any Ray, MLflow or run-dir work
    h = bins_hash(cfg)
    info = _check_run_dir(cfg, h)
    if cfg.data_mode == "stream":
        _check_stream_fits(cfg)
    from fm4npp.pretrain.objectives import objective_tags

    run_tags = {"preset": cfg.preset, "bins_hash": h, **objective_tags(cfg), **(tags or {})}
    rec = mixture_record(cfg)
    # the mixture whole (mixture.read_record reads it back) and one flat param per weight
    mix = {"mixture": json.dumps(rec), **{f"mixture.{r['name']}.weight": r["weight"] for r in rec}} if rec else {}
    # the config's fields by their own names (what the runs table and the analysis read), the
    # rest of the spec as serialize.* and model.*, the whole spec as run_spec.json
    spec = run_spec(cfg)
    params = {**cfg.to_dict(), **RunSpec(serialize=spec.serialize, model=spec.model).params(),
              "bins_hash": h, **mix}
    run_id, _ = runs.get_or_start_run(cfg.run_name, params, run_tags, parent_run_id,
                                      cfg.experiment, storage=cfg.storage_path)
    runs.log_dict(run_id, spec.to_dict(), SPEC_FILE)
    _write_run_info(cfg, {**info, "bins_hash": h, "mlflow_run_id": run_id, "mixture": rec,
                          "experiment": cfg.experiment, "config": cfg.to_dict()})
    cbs = [make_mlflow_callback(run_id, runs.tracking_uri()), *(callbacks or [])]
    try:
        result = build_trainer(cfg, callbacks=cbs, datasets=datasets, bins_hash_=h).fit()
    except BaseException:
        runs.end_run(run_id, "FAILED")
        raise
    m = dict(result.metrics or {})
    ckpt = result.checkpoint.path if result.checkpoint else None
    _log_artifacts(run_id, cfg)
    ratio = judge_against_baseline(run_id, cfg.run_name, m)
    runs.end_run(run_id, "FINISHED")
    return {
        "val_mse": m.get("val_mse"),
        "val_baseline_mse": m.get("val_baseline_mse"),
        "val_mse_over_baseline": ratio,
        "N": m.get("params_N"),
        "D": m.get("spacepoints_D"),
        "C": m.get("flops_C"),
        "events": m.get("events"),
        "steps": m.get("step"),
        "checkpoint": ckpt,
        "pretrained": (str(Path(ckpt) / PRETRAINED_DIR)
                       if ckpt and (Path(ckpt) / PRETRAINED_DIR).is_dir() else None),
        "run_dir": str(Path(cfg.storage_path) / cfg.run_name),
        "run_name": cfg.run_name,
        "mlflow_run_id": run_id,
        "experiment": cfg.experiment,
        "tracking_uri": runs.tracking_uri(),
    }
