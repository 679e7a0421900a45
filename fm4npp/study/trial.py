"""One Tune trial of a scaling study: one pretraining run of one grid cell, reported to Tune.

The trainer is `fm4npp.pretrain.run:run_pretraining` unless the study names another
(``--trainer MODULE:FUNCTION``, same signature and result keys): the extension point for a
different training backend, and how the tests run a study's machinery in seconds.
"""

from __future__ import annotations

from fm4npp.overrides import load_function
from fm4npp.study.presets import EXPERIMENT, StudyPreset, trial_key, trial_overrides

DEFAULT_TRAINER = "fm4npp.pretrain.run:run_pretraining"


def train_set_spacepoints(cfg) -> int:
    """Spacepoints in a run's training set: the train split at its data fraction, after the
    serialization point cap. Figure 5(b)'s x: with a fixed step budget the spacepoints a run
    consumes are the same for every fraction; the data it can learn from is not."""
    import pyarrow.compute as pc

    from fm4npp.data.io import iter_tables
    from fm4npp.data.pipeline import keep_mask
    from fm4npp.pretrain.run import pipeline_config

    from fm4npp.data import mixture
    from fm4npp.serialize.bins import load_bins
    from fm4npp.serialize.config import kept_points

    if mixture.is_mixture(cfg.data):  # the components' training sets together
        import dataclasses

        return sum(train_set_spacepoints(dataclasses.replace(cfg, data=c.path, bins=str(c.bins_path)))
                   for c in mixture.parse_spec(cfg.data))
    pcfg = pipeline_config(cfg, load_bins(cfg.bins))
    total = 0
    for _, _, table in iter_tables(cfg.data, ["event_id", "hit_x"], check=False, empty="keep"):
        mask = keep_mask(table.column("event_id").to_numpy(), "train", pcfg)
        n = pc.fill_null(pc.list_value_length(table.column("hit_x")), 0).to_numpy()[mask]
        total += int(kept_points(n, pcfg.serialize).sum())
    return total


def trial_params(cfg, point: dict, seed: int, result: dict) -> dict:
    """What a reader of the MLflow runs table compares trials by (beside the full config)."""
    from fm4npp.model.presets import get_preset

    model = get_preset(cfg.preset, **({"n_layers": cfg.n_layers} if cfg.n_layers else {}))
    return {"width": model.d_model, "layers": model.n_layers, "N": int(result["N"]),
            "D": int(result["D"]), "steps": int(cfg.steps), "seed": int(seed),
            "data_fraction": float(point.get("fraction", 1.0))}


def run_trial(config: dict) -> None:
    """The Tune trial: one pretraining run of one grid cell, reported back to Tune.

    `config` holds the grid values ("point", "seed") and the study constants ("study"),
    all plain data so the Tune experiment state can be restored from disk.
    """
    import ray.tune

    from fm4npp import runs
    from fm4npp.pretrain.config import PretrainConfig

    s = config["study"]
    preset = StudyPreset(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in s["preset"].items()})
    point, seed = config["point"], int(config["seed"])
    key = trial_key(point, seed, preset)
    runs.use_tracking_uri(s["tracking_uri"])  # one database for the whole study

    cfg = PretrainConfig.from_dict({**s["base_config"], **trial_overrides(point, seed, preset),
                                    "run_name": key,
                                    "storage_path": s["train_storage"],
                                    "experiment": EXPERIMENT})
    tags = {"study": s["name"], "study.kind": s["kind"], "study.preset": s["preset_name"],
            "trial_key": key, "seed": str(seed), "model": point["width"],
            **{f"axis.{k}": str(v) for k, v in point.items()}}
    train = load_function(s["trainer"], "--trainer")
    callbacks = []
    if s["trainer"] == DEFAULT_TRAINER:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks = [TuneReportCallback()]  # Train's reports become the trial's, step by step
    result = train(cfg, callbacks=callbacks, parent_run_id=s["parent_run_id"], tags=tags)
    try:
        d_set = result.get("D_set") or train_set_spacepoints(cfg.resolved())
    except Exception as exc:  # a secondary number: never fail a trained trial over it
        print(f"[trial {key}] training-set size unknown ({exc!r}); Figure 5(b) will use the "
              f"spacepoints consumed", flush=True)
        d_set = 0

    if d_set:
        runs.log_metrics(result["mlflow_run_id"], {"train_set_spacepoints": d_set}, step=0)
    runs.log_params(result["mlflow_run_id"], trial_params(cfg, point, seed, result))
    # the numbers the analysis reads, also as tags (searchable, shown in the runs table)
    c = runs.client()
    summary = {"N": result.get("N"), "D": result.get("D"), "C": result.get("C"),
               "val_mse": result.get("val_mse"), "D_set": d_set or None}
    for k, v in summary.items():
        if v is not None:
            c.set_tag(result["mlflow_run_id"], k, repr(float(v)))
    ray.tune.report({**{k: float(v) for k, v in summary.items() if v is not None},
                     "trial_done": 1, "mlflow_run_id": result["mlflow_run_id"]})
