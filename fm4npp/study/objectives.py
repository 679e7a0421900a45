"""The objectives study: which pretraining objective makes a frozen FM worth having.

Phase 1 pretrains one backbone per *variant* (an objective, optionally with a mask fraction
and a bidirectional backbone) at the same width, on the same data and at the same training
FLOPs (the model's flop counter; a bidirectional backbone costs twice per step, so it gets
fewer steps), as one Ray Tune grid (fm4npp.study.driver.run_grid; MLflow experiment
``fm4npp-scaling``). Phase 2 trains, on the same labelled events and scored on the same test
events, the adapters on each frozen FM, AdapterOnly (raw inputs) and the from-scratch model
(same backbone + adapter from random init, trained end to end), for every task, on nested
labelled subsets, several seeds (fm4npp.downstream.studies.run_cells; experiment
``fm4npp-downstream``). Seeds vary the adapter (initialisation, labelled subset and batch
order); each variant is pretrained once. Both phases resume after a killed driver. The table
(fm4npp.study.objectives_table) is logged to the downstream parent run and written to --out.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field

from fm4npp.study.presets import StudyPreset

KIND = "objectives"
TASKS = ("tracking", "pid", "noise")
VARIANT = re.compile(r"^(?P<objective>[a-z_]+)(-m(?P<mask>\d+))?(?P<bi>-bi)?$")


@dataclass(frozen=True)
class ObjectivesPreset:
    width: str  # model preset of every backbone
    steps: int  # the causal `knn` run's steps; the others get the same training FLOPs
    variants: tuple[str, ...]  # "<objective>[-m<mask %>][-bi]", e.g. masked-m60-bi
    label_counts: tuple[int, ...]  # nested labelled subsets; the table is at the largest
    seeds: tuple[int, ...]
    events: int  # events of the default data set when no --data is given
    tasks: tuple[str, ...] = TASKS
    pretrain: dict = field(default_factory=dict)  # PretrainConfig fields of every run
    finetune: dict = field(default_factory=dict)  # FinetuneConfig fields of every cell


PRESETS = {
    # A test's preset: every phase and the table in a few minutes on 2 cores; the numbers
    # mean nothing at this size.
    "smoke": ObjectivesPreset(
        width="w16", steps=60, variants=("knn", "masked", "masked-bi"),
        label_counts=(24, 72), seeds=(0, 1), events=600,
        pretrain=dict(batch_size=8, max_points=512, lr=3e-3, val_every=30, ckpt_every=60,
                      log_every=10, val_events=32),
        finetune=dict(epochs=2, max_steps=24, n_test_events=32, val_events=0, batch_size=8,
                      tracking={"d_embed": 32, "n_queries": 32, "n_layers": 1, "d_ffn": 64},
                      classifier={"d_embed": 32, "d_hidden": 64}),
    ),
    # The question at CPU scale: every objective, causal and bidirectional, 3 seeds, label
    # curves from 100 to 1,000 events (the bar is read off this preset's table). The
    # adapter budget (600 steps) sizes the 243 cells to the 10-hour limit here; 1,500 steps
    # put from-scratch cells at up to 19 min each (measured at load 5-30).
    "cpu": ObjectivesPreset(
        width="w32", steps=1500,
        variants=("knn", "knn_energy", "masked", "masked-m60", "masked-bi", "hybrid",
                  "supervised"),
        label_counts=(100, 300, 1000), seeds=(0, 1, 2), events=2400,
        pretrain=dict(batch_size=8, max_points=1024, lr=3e-3, val_every=250, ckpt_every=250,
                      log_every=50, val_events=128),
        finetune=dict(epochs=20, max_steps=600, n_test_events=300, val_events=100),
    ),
}


def parse_variant(variant: str) -> dict:
    """``masked-m60-bi`` -> {"objective": "masked", "mask_fraction": 0.6, "bidirectional": True}."""
    from fm4npp.pretrain.objectives import objective_class

    m = VARIANT.match(variant)
    if not m:
        raise ValueError(f"variant {variant!r}: expected <objective>[-m<mask percent>][-bi], "
                         f"e.g. masked-m60-bi")
    cls = objective_class(m["objective"])  # refuses an unknown objective by name
    point = {"objective": m["objective"]}
    if m["mask"]:
        if "mask_fraction" not in cls.params:
            raise ValueError(f"variant {variant!r}: objective {cls.name!r} hides no points")
        point["mask_fraction"] = int(m["mask"]) / 100
    if m["bi"]:
        if not cls.bidirectional_ok:
            raise ValueError(f"variant {variant!r}: objective {cls.name!r} predicts later points "
                             f"of the scan, which a bidirectional backbone reads as inputs")
        point["bidirectional"] = True
    return point


def flops_per_token(width: str, point: dict, pretrain: dict) -> float:
    """Training FLOPs per token of one variant's backbone (heads and directions included)."""
    from fm4npp.model.flops import flops_per_token as per_token
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.pretrain.model_spec import model_config_for
    from fm4npp.serialize.config import SerializeConfig

    from fm4npp.study.presets import POINT_CONFIG_FIELDS

    cfg = PretrainConfig(preset=width, **{k: v for k, v in pretrain.items() if k != "batch_size"},
                         **{k: v for k, v in point.items() if k in POINT_CONFIG_FIELDS})
    seq = cfg.max_points if cfg.max_points > 0 else SerializeConfig().max_points
    return per_token(model_config_for(cfg, SerializeConfig().k), seq)


def grid(preset: ObjectivesPreset) -> list[dict]:
    """One grid point per variant, each at the causal knn run's training FLOPs: its budget is
    the knn run's FLOPs per token over its own (tokens per step are the same for all)."""
    ref = flops_per_token(preset.width, {"objective": "knn"}, preset.pretrain)
    points = []
    for v in preset.variants:
        point = {"width": preset.width, **parse_variant(v)}
        point["budget"] = round(ref / flops_per_token(preset.width, point, preset.pretrain), 4)
        points.append(point)
    return points


def study_preset(preset: ObjectivesPreset) -> StudyPreset:
    from fm4npp.pretrain.config import PretrainConfig

    batch_size = preset.pretrain.get("batch_size", PretrainConfig.batch_size)
    return StudyPreset(widths=(preset.width,), steps={preset.width: preset.steps},
                       data_width=preset.width, batch_size=batch_size,
                       seeds=(0,), pretrain={k: v for k, v in preset.pretrain.items()
                                             if k != "batch_size"})


def downstream_cells(preset: ObjectivesPreset, backbones: dict[str, str]) -> list:
    """Every (seed, task, labelled subset): each frozen FM, AdapterOnly, from scratch. Seed
    by seed, so a study stopped part-way has whole seeds of every task to read."""
    from fm4npp.downstream.studies import Cell

    cells = []
    for seed in preset.seeds:
        for task in preset.tasks:
            for n in preset.label_counts:
                cells += [Cell(task, "fm", label, path, n, seed) for label, path in backbones.items()]
                cells += [Cell(task, "raw", "", "", n, seed), Cell(task, "scratch", "", "", n, seed)]
    return cells


def run(preset_name: str, data: str = "", storage: str = "", name: str = "", out: str = "",
        variants: tuple[str, ...] = (), tasks: tuple[str, ...] = (),
        seeds: tuple[int, ...] = ()) -> dict:
    import dataclasses
    from pathlib import Path

    from fm4npp import runs
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.downstream.studies import EXPERIMENT, parse_backbones, run_cells
    from fm4npp.study.driver import resolve_data, run_grid
    from fm4npp.study.objectives_table import objectives_table, write_table
    from fm4npp.study.presets import trial_key

    if preset_name not in PRESETS:
        raise KeyError(f"unknown objectives preset {preset_name!r}; one of {sorted(PRESETS)}")
    preset = PRESETS[preset_name]
    changes = {k: v for k, v in (("variants", variants), ("tasks", tasks), ("seeds", seeds)) if v}
    preset = dataclasses.replace(preset, **changes)
    bad = [t for t in preset.tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown tasks {bad}; one of {TASKS}")
    name = name or f"{KIND}-{preset_name}"
    if not data:
        from fm4npp.pretrain.default_data import ensure_default_dataset

        data = str(ensure_default_dataset(preset.events))
    data_dir = resolve_data(data)
    sp = study_preset(preset)
    points = grid(preset)
    pre = run_grid(name, KIND, preset_name, sp, points, data_dir, storage)
    if pre["failed"]:
        raise RuntimeError(f"pretraining trials failed: {pre['failed']}; rerun to resume")
    backbones = parse_backbones([f"{trial_key(p, 0, sp)}={Path(pre['train_storage']) / trial_key(p, 0, sp)}"
                                 for p in points])  # each run dir's latest checkpoint
    base = FinetuneConfig.from_dict({**FinetuneConfig(source="raw").to_dict(), "data": str(data_dir),
                                     "preset": preset.width, "storage": storage,
                                     **{k: v for k, v in preset.finetune.items()
                                        if k not in ("tracking", "classifier")}})
    for section in ("tracking", "classifier"):
        if section in preset.finetune:
            base = base.with_overrides([f"{section}.{k}={v}" for k, v in preset.finetune[section].items()])
    cells = downstream_cells(preset, backbones)
    print(f"[objectives] {len(backbones)} pretrained backbones; {len(cells)} downstream cells",
          flush=True)
    run_cells(name, cells, base, EXPERIMENT, log=lambda m: print(m, flush=True))
    table = objectives_table(name, EXPERIMENT)
    parent = runs.find_runs(EXPERIMENT, f"tags.study = '{name}' and tags.`fm4npp.study_parent` = '1'")
    if parent:
        runs.log_dict(parent[0].info.run_id, table, "objectives.json")
    if out:
        write_table(table, Path(out))
    return {"name": name, "pretrain": pre, "table": table}


def main(argv: list[str] | None = None) -> int:
    from fm4npp.study.driver import comma_list, run_reported
    from fm4npp.study.objectives_table import to_markdown

    p = argparse.ArgumentParser(prog="studies/objectives.py", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    p.add_argument("--data", default="", help="data set dir (default: the default data set at "
                   "the preset's size, simulated into the data home on first use)")
    p.add_argument("--storage", default="", help="storage root (default $FM4NPP_STORAGE, else "
                   "the data home's runs/)")
    p.add_argument("--name", default="", help="study name (default objectives-<preset>)")
    p.add_argument("--out", default="", help="also write objectives.md + objectives.json here")
    p.add_argument("--variants", default="", help="comma list, e.g. knn,masked,masked-m60-bi "
                   "(default: the preset's)")
    p.add_argument("--tasks", default="", help=f"comma list of {','.join(TASKS)} (default all)")
    p.add_argument("--seeds", default="", help="downstream seeds (default: the preset's)")
    a = p.parse_args(argv)
    return run_reported(
        lambda: run(a.preset, a.data, a.storage, a.name, a.out, comma_list(a.variants),
                    comma_list(a.tasks), tuple(int(s) for s in comma_list(a.seeds))),
        lambda res: to_markdown(res["table"]),
        "[objectives] table: python analysis/objectives_table.py --study {name} --out DIR")
