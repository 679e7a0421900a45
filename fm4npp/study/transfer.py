"""The transfer study: does pretraining on several detectors and facilities help (M1-M4)?

Phase 1 pretrains, at the same width, step count, batch and point cap, one FM on the TPC-only
data (``tpc``), one on each single domain and one on the mixture of them (fm4npp.data's
``name=PATH:weight,...`` spec), as one Ray Tune grid (fm4npp.study.driver.run_grid; MLflow
experiment ``fm4npp-scaling``). The FLOPs each run spends (its logged C) still differ by the
domains' hits per event: ZEUS-like events have fewer hits than sPHENIX ones.
Phase 2, for every benchmark (a data family and a task), trains the adapters on each frozen
FM (the transfer matrix: every FM on every benchmark), AdapterOnly and the from-scratch model
on the same nested labelled subsets, several seeds (fm4npp.downstream.studies.run_cells, one
downstream study ``<study>/<benchmark>`` each, nested under the study's parent run in
``fm4npp-downstream``, whose ``transfer_spec.json`` says what each FM and benchmark is). Both
phases resume after a killed driver. The report (fm4npp.study.transfer_report) states M1-M4.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

KIND = "transfer"
# domain -> (detector file, facility file): a data family, simulated once per preset size
DOMAINS = {
    "tpc": ("sphenix_tpc", "rhic_pp200"),  # the paper's data: the TPC-only FM
    "sphenix": ("sphenix", "rhic_pp200"),  # TPC + MVTX + INTT (silicon-enhanced)
    "aleph": ("aleph", "lep_z"),  # e+e- at the Z pole
    "zeus": ("zeus", "hera_ep"),  # ep at HERA
    "eic": ("zeus", "eic_ep"),  # the EIC-style proxy: 18 x 275 GeV ep through the ZEUS-like CTD
}
# benchmark -> (domain, task, kind); kind is what M1/M3/M4 ask about
BENCHMARKS = {
    "tpc-tracking": ("tpc", "tracking", "tpc"),
    "tpc-pid": ("tpc", "pid", "tpc"),
    "tpc-noise": ("tpc", "noise", "tpc"),
    "silicon-tracking": ("sphenix", "tracking", "silicon"),
    "aleph-tracking": ("aleph", "tracking", "cross-facility"),
    "aleph-pid": ("aleph", "pid", "cross-facility"),
    "zeus-tracking": ("zeus", "tracking", "cross-facility"),
    "eic-electron": ("eic", "electron", "eic"),
    "eic-q2": ("eic", "q2", "eic"),
}
MIXTURE = "mix"  # the label of the mixed-domain FM


@dataclass(frozen=True)
class TransferPreset:
    width: str  # model preset of every FM (and of the from-scratch models)
    steps: int  # optimizer steps of every pretraining run (same batch and point cap)
    domains: tuple[str, ...]  # single-domain FMs; "tpc" is the TPC-only FM
    mixture: dict  # the mixed-domain FM's weights, {domain: weight}
    benchmarks: tuple[str, ...]
    label_counts: tuple[int, ...]  # nested labelled subsets
    seeds: tuple[int, ...]
    events: int  # events of each domain's default data set
    pretrain: dict = field(default_factory=dict)  # PretrainConfig fields of every run
    finetune: dict = field(default_factory=dict)  # FinetuneConfig fields (dicts: sections)
    study: dict = field(default_factory=dict)  # StudyPreset fields (workers, GPUs)


PRESETS = {
    # A test's preset: both phases and the report in minutes on 2 cores, one seed and one
    # labelled subset (so nothing is "beyond the seed interval": the verdicts come out not met);
    # the numbers mean nothing.
    "smoke": TransferPreset(
        width="w16", steps=30, domains=("tpc", "sphenix", "zeus"),
        mixture={"sphenix": 0.5, "zeus": 0.5},
        benchmarks=("silicon-tracking", "zeus-tracking", "eic-electron"),
        label_counts=(16,), seeds=(0,), events=120,
        pretrain=dict(batch_size=4, max_points=512, lr=3e-3, val_every=30, ckpt_every=30,
                      log_every=10, val_events=8, subsystem_embedding=True),
        finetune=dict(epochs=1, max_steps=8, n_test_events=12, val_events=0, batch_size=4,
                      tracking={"d_embed": 16, "n_queries": 16, "n_layers": 1, "d_ffn": 32},
                      classifier={"d_embed": 16, "d_hidden": 32}),
    ),
    # The question at CPU scale, sized to run here in hours (2 cores): every domain, the
    # three-way mixture, every benchmark, 3 seeds, two labelled subsets.
    "cpu": TransferPreset(
        width="w32", steps=800, domains=("tpc", "sphenix", "aleph", "zeus"),
        mixture={"sphenix": 0.5, "aleph": 0.25, "zeus": 0.25},
        benchmarks=tuple(BENCHMARKS), label_counts=(100, 300), seeds=(0, 1, 2), events=1200,
        pretrain=dict(batch_size=8, max_points=1024, lr=3e-3, val_every=200, ckpt_every=200,
                      log_every=50, val_events=64, subsystem_embedding=True),
        finetune=dict(epochs=10, max_steps=300, n_test_events=150, val_events=0),
    ),
    # The proposal's scale (GPU cluster): m3 FMs, label curves to 3,000 events.
    "paper": TransferPreset(
        width="m3", steps=100_000, domains=("tpc", "sphenix", "aleph", "zeus"),
        mixture={"sphenix": 0.5, "aleph": 0.25, "zeus": 0.25},
        benchmarks=tuple(BENCHMARKS), label_counts=(100, 300, 1000, 3000), seeds=(0, 1, 2),
        events=200_000,
        pretrain=dict(batch_size=256, lr=2e-4, val_every=2000, ckpt_every=2000, log_every=100,
                      val_events=2048, subsystem_embedding=True),
        finetune=dict(epochs=20, n_test_events=2000, val_events=500),
        study=dict(workers={"m3": 4}, use_gpu=True, cpus_per_worker=4.0, data_cpus=1.0),
    ),
}


def check_preset(p: TransferPreset) -> None:
    bad = [d for d in (*p.domains, *p.mixture) if d not in DOMAINS]
    if bad:
        raise ValueError(f"unknown domains {bad}; one of {sorted(DOMAINS)}")
    bad = [b for b in p.benchmarks if b not in BENCHMARKS]
    if bad:
        raise ValueError(f"unknown benchmarks {bad}; one of {sorted(BENCHMARKS)}")
    if p.mixture and (len(p.mixture) < 2 or min(p.mixture.values()) <= 0):
        raise ValueError(f"the mixture needs >= 2 domains with positive weights, got {p.mixture}")


def spec(p: TransferPreset) -> dict:
    """What each FM was pretrained on and what each benchmark is: the report's key."""
    fms = {d: {"domains": [d], "kind": "tpc-only" if d == "tpc" else "single"} for d in p.domains}
    if p.mixture:
        fms[MIXTURE] = {"domains": sorted(p.mixture), "weights": dict(p.mixture), "kind": "mixture"}
    benches = {b: dict(zip(("domain", "task", "kind"), BENCHMARKS[b])) for b in p.benchmarks}
    for b in benches.values():
        b["detector"], b["facility"] = DOMAINS[b["domain"]]
    return {"fms": fms, "benchmarks": benches, "label_counts": list(p.label_counts),
            "seeds": list(p.seeds), "width": p.width, "steps": p.steps}


def data_sets(p: TransferPreset, data: dict[str, str]) -> dict[str, str]:
    """Every domain's data set directory: the user's (``data``), else the default set of that
    detector and facility at the preset's size (simulated and fitted on first use)."""
    from fm4npp.pretrain.default_data import ensure_default_dataset
    from fm4npp.study.driver import resolve_data

    needed = sorted({*p.domains, *p.mixture, *(BENCHMARKS[b][0] for b in p.benchmarks)})
    out = {}
    for d in needed:
        path = data.get(d) or str(ensure_default_dataset(p.events, detector=DOMAINS[d][0],
                                                         facility=DOMAINS[d][1]))
        out[d] = str(resolve_data(path))
    return out


def grid(p: TransferPreset, dirs: dict[str, str]) -> list[dict]:
    points = [{"width": p.width, "domain": d, "data": dirs[d]} for d in p.domains]
    if p.mixture:
        mix = ",".join(f"{d}={dirs[d]}:{w:g}" for d, w in sorted(p.mixture.items()))
        points.append({"width": p.width, "domain": MIXTURE, "data": mix})
    return points


def study_preset(p: TransferPreset):
    from fm4npp.pretrain.config import PretrainConfig
    from fm4npp.study.presets import StudyPreset

    return StudyPreset(widths=(p.width,), steps={p.width: p.steps}, data_width=p.width,
                       batch_size=p.pretrain.get("batch_size", PretrainConfig.batch_size), seeds=(0,),
                       pretrain={k: v for k, v in p.pretrain.items() if k != "batch_size"},
                       **p.study)


def finetune_base(p: TransferPreset, data_dir: str, storage: str):
    from fm4npp.downstream.config import FinetuneConfig

    plain = {k: v for k, v in p.finetune.items() if not isinstance(v, dict)}
    base = FinetuneConfig.from_dict({**FinetuneConfig(source="raw").to_dict(), "data": data_dir,
                                     "preset": p.width, "storage": storage, **plain})
    for section, values in p.finetune.items():
        if isinstance(values, dict):
            base = base.with_overrides([f"{section}.{k}={v}" for k, v in values.items()])
    return base


def cells(p: TransferPreset, bench: str, backbones: dict[str, str], seed: int) -> list:
    from fm4npp.downstream.studies import Cell

    task = BENCHMARKS[bench][1]
    out = []
    for n in p.label_counts:
        out += [Cell(task, "fm", label, path, n, seed) for label, path in backbones.items()]
        out += [Cell(task, "raw", "", "", n, seed), Cell(task, "scratch", "", "", n, seed)]
    return out


def run(preset_name: str, data: dict[str, str] | None = None, storage: str = "", name: str = "",
        out: str = "", benchmarks: tuple[str, ...] = (), seeds: tuple[int, ...] = ()) -> dict:
    import dataclasses
    from pathlib import Path

    from fm4npp import runs
    from fm4npp.downstream.studies import EXPERIMENT, parse_backbones, run_cells
    from fm4npp.study.driver import run_grid
    from fm4npp.study.presets import trial_key
    from fm4npp.study.transfer_report import transfer_report, write_report

    if preset_name not in PRESETS:
        raise KeyError(f"unknown transfer preset {preset_name!r}; one of {sorted(PRESETS)}")
    p = PRESETS[preset_name]
    p = dataclasses.replace(p, **{k: v for k, v in (("benchmarks", benchmarks), ("seeds", seeds)) if v})
    check_preset(p)
    name = name or f"{KIND}-{preset_name}"
    dirs = data_sets(p, data or {})
    sp, points = study_preset(p), grid(p, dirs)
    pre = run_grid(name, KIND, preset_name, sp, points, Path(dirs[p.domains[0]]), storage)
    if pre["failed"]:
        raise RuntimeError(f"pretraining trials failed: {pre['failed']}; rerun to resume")
    backbones = parse_backbones([f"{pt['domain']}={Path(pre['train_storage']) / trial_key(pt, 0, sp)}"
                                 for pt in points])
    parent, _ = runs.get_or_start_run(name, params={"preset": preset_name},
                                      tags={"study": name, "fm4npp.transfer_parent": "1"},
                                      experiment=EXPERIMENT)
    the_spec = {**spec(p), "data": dirs, "backbones": backbones,
                "pretrain_study": pre["name"], "pretrain_parent_run_id": pre["parent_run_id"]}
    # a rerun on fewer benchmarks (--benchmarks) keeps those the study measured before
    the_spec["benchmarks"] = {**_logged_spec(parent).get("benchmarks", {}), **the_spec["benchmarks"]}
    runs.log_dict(parent, the_spec, "transfer_spec.json")
    # seed by seed over all benchmarks: a study stopped part way has every benchmark measured
    for seed in p.seeds:
        for bench in p.benchmarks:
            sub = f"{name}/{bench}"
            base = finetune_base(p, dirs[BENCHMARKS[bench][0]], storage)
            # the benchmark's own parent, nested under the study's (run_cells finds it by tags)
            runs.get_or_start_run(sub, params={"benchmark": bench}, parent_run_id=parent,
                                  tags={"study": sub, "fm4npp.study_parent": "1", "benchmark": bench},
                                  experiment=EXPERIMENT)
            todo = cells(p, bench, backbones, seed)
            print(f"[transfer] {bench}, seed {seed}: {len(todo)} cells", flush=True)
            run_cells(sub, todo, base, EXPERIMENT, log=lambda m: print(m, flush=True))
    report = transfer_report(name, EXPERIMENT)
    runs.log_dict(parent, report, "transfer.json")
    runs.end_run(parent, "FINISHED")
    if out:
        write_report(report, Path(out))
    return {"name": name, "pretrain": pre, "report": report}


def _logged_spec(run_id: str) -> dict:
    import mlflow

    from fm4npp import runs

    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.load_dict(f"{runs.client().get_run(run_id).info.artifact_uri}/transfer_spec.json")
    except (OSError, MlflowException):  # a new study: nothing logged yet
        return {}


def _pairs(s: str) -> dict[str, str]:
    out = {}
    for item in (x.strip() for x in s.split(",") if x.strip()):
        k, eq, v = item.partition("=")
        if not eq or k not in DOMAINS:
            raise ValueError(f"--data item {item!r}: expected DOMAIN=PATH, DOMAIN one of "
                             f"{sorted(DOMAINS)}")
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    from fm4npp.study.driver import comma_list, run_reported
    from fm4npp.study.transfer_report import to_markdown

    ap = argparse.ArgumentParser(prog="studies/transfer.py", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    ap.add_argument("--data", default="", help="DOMAIN=PATH,... data sets to use instead of the "
                    f"default ones ({', '.join(sorted(DOMAINS))})")
    ap.add_argument("--storage", default="", help="storage root (default $FM4NPP_STORAGE, else "
                    "the data home's runs/)")
    ap.add_argument("--name", default="", help="study name (default transfer-<preset>)")
    ap.add_argument("--out", default="", help="also write the report (transfer.md, .json, figures)")
    ap.add_argument("--benchmarks", default="", help=f"comma list of {','.join(BENCHMARKS)} "
                    "(default: the preset's)")
    ap.add_argument("--seeds", default="", help="downstream seeds (default: the preset's)")
    a = ap.parse_args(argv)
    return run_reported(
        lambda: run(a.preset, _pairs(a.data), a.storage, a.name, a.out, comma_list(a.benchmarks),
                    tuple(int(s) for s in comma_list(a.seeds))),
        lambda res: to_markdown(res["report"]),
        "[transfer] report: python analysis/transfer_report.py --study {name} --out DIR")
