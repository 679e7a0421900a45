"""The run spec (fm4npp.spec): every stage's config nested, read back exactly from each form."""

import json

import pytest

from fm4npp.downstream.config import FinetuneConfig
from fm4npp.model.config import ModelConfig
from fm4npp.pretrain.config import PretrainConfig
from fm4npp.serialize.config import SerializeConfig
from fm4npp.spec import RunSpec, from_checkpoint, read


def _spec() -> RunSpec:
    """Values off their defaults in every kind of field: tuples, None, dicts, nested sections."""
    return RunSpec(
        pretrain=PretrainConfig(preset="w16", data="/d/x", lr=3e-3, objective="masked",
                                bidirectional=True, max_points=512),
        serialize=SerializeConfig(k=7, n_bins=(4, 6, 8), r_range_cm=(30.0, 78.0), order="radial"),
        model=ModelConfig(d_model=48, headdim=32, n_layers=3, k=7, bidirectional=True, mask_token=True,
                          output_heads={"masked": 4}),
        downstream=FinetuneConfig(task="pid", source="raw", n_train_events=300).with_overrides(
            ["classifier.d_embed=96", "tracking.n_queries=12"]),
    )


def test_every_form_reads_back_exactly(tmp_path):
    spec = _spec()
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    params = spec.params()
    assert params["serialize.n_bins"] == "[4, 6, 8]" and params["downstream.classifier.d_embed"] == "96"
    assert params["model.output_heads"] == '{"masked": 4}'  # a dict field is one value
    assert RunSpec.from_params({**params, "bins_hash": "abc", "lr": "0.1"}) == spec  # others ignored
    assert read(spec.write(tmp_path / "run_spec.json")) == spec
    partial = RunSpec(downstream=spec.downstream)
    assert RunSpec.from_dict(partial.to_dict()) == partial and RunSpec.from_params(partial.params()) == partial


def test_overrides_address_any_field_by_section_and_are_typed():
    spec = _spec().with_overrides(["pretrain.lr=1e-4", "serialize.n_bins=2,2,2", "serialize.r_range_cm=none",
                                   "model.d_model=64", "downstream.tracking.n_queries=64",
                                   "pretrain.bidirectional=off"])
    assert spec.pretrain.lr == 1e-4 and spec.pretrain.bidirectional is False
    assert spec.serialize.n_bins == (2, 2, 2) and spec.serialize.r_range_cm is None
    assert spec.model.d_model == 64 and spec.downstream.tracking.n_queries == 64
    assert spec.downstream.classifier.d_embed == 96  # the rest kept
    with pytest.raises(KeyError, match="valid keys: .*'n_queries'"):
        spec.with_overrides(["downstream.tracking.n_querys=3"])
    with pytest.raises(KeyError, match="SECTION.FIELD"):
        spec.with_overrides(["lr=1"])
    with pytest.raises(KeyError, match="no downstream section"):
        RunSpec(pretrain=PretrainConfig()).with_overrides(["downstream.lr=1"])
    with pytest.raises(ValueError, match="'serialize.n_bins'|'n_bins'.*3 comma"):
        spec.with_overrides(["serialize.n_bins=2,2"])
    with pytest.raises(ValueError, match="cannot read 'big' as int"):
        spec.with_overrides(["model.d_model=big"])
    with pytest.raises(ValueError, match="order"):  # the section's own checks run
        spec.with_overrides(["serialize.order=spiral"])


def test_a_malformed_spec_file_is_refused_naming_it(tmp_path):
    bad = tmp_path / "run_spec.json"
    bad.write_text(json.dumps({"pretrain": {"lrr": 1}}))
    with pytest.raises(ValueError, match=f"{bad}: not a run spec.*lrr"):
        read(bad)
    bad.write_text(json.dumps({"optimizer": {}}))
    with pytest.raises(ValueError, match="unknown run-spec section"):
        read(bad)


def _checkpoint(tmp_path, with_config_in_pretrained: bool):
    """A checkpoint dir as the pretraining loop writes one: train_state.* and pretrained/."""
    import torch

    from fm4npp.model.backbone import FM4NPP
    from fm4npp.model.io import save_pretrained
    from fm4npp.pretrain.checkpoint import PRETRAINED_DIR, save_train_state
    from fm4npp.pretrain.model_spec import model_config_for

    cfg = PretrainConfig(preset="w16", data=str(tmp_path), objective="masked", bidirectional=True,
                         n_layers=2).resolved()
    scfg = SerializeConfig(k=5, n_bins=(4, 4, 4))
    mcfg = model_config_for(cfg, k=5)
    extra = {"serialize": scfg.to_dict(), **({"pretrain_config": cfg.to_dict()} if with_config_in_pretrained else {})}
    save_pretrained(FM4NPP(mcfg), tmp_path / PRETRAINED_DIR, extra=extra)
    save_train_state(tmp_path, {"config": cfg.to_dict(), "serialize": scfg.to_dict(), "step": 3,
                                "optimizer": {"m": torch.ones(2)}})
    return RunSpec(pretrain=cfg, serialize=scfg, model=mcfg)


@pytest.mark.parametrize("with_config", [True, False])  # False: a pretrained/ saved before it held it
def test_the_spec_of_a_checkpoint_is_the_one_it_was_trained_with(tmp_path, with_config):
    want = _checkpoint(tmp_path, with_config)
    assert from_checkpoint(tmp_path) == want
    assert from_checkpoint(tmp_path / "pretrained") == want
    (tmp_path / "train_state.json").unlink()  # pretrained/ copied away alone
    alone = from_checkpoint(tmp_path / "pretrained")
    assert alone.model == want.model and alone.serialize == want.serialize
    assert alone.pretrain == (want.pretrain if with_config else None)
    with pytest.raises(FileNotFoundError, match="neither a pretraining checkpoint"):
        from_checkpoint(tmp_path / "nothing")


def test_the_downstream_crop_keeps_the_run_names_it_had_as_max_points():
    """FinetuneConfig.max_points (a training crop, not the serialization cap) became
    crop_points; finished runs keep their names (these hashes were computed before)."""
    assert FinetuneConfig(source="raw", data="/d", task="pid").config_hash() == "d273982420"
    assert FinetuneConfig(source="fm", backbone="/b", crop_points=1000).config_hash() == "fd6f236b72"
    with pytest.raises(KeyError, match="unknown downstream config key 'max_points'"):
        FinetuneConfig(source="raw").with_overrides(["max_points=10"])


def test_pretrain_from_a_spec_keeps_its_run_only_when_nothing_changes(tmp_path):
    from fm4npp.cli import build_parser
    from fm4npp.pretrain.cli import config_from_args

    ran = PretrainConfig(preset="w16", data=str(tmp_path), lr=3e-3, steps=40).resolved()
    path = RunSpec(pretrain=ran, serialize=SerializeConfig()).write(tmp_path / "run_spec.json")

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["pretrain", "--spec", str(path), *argv]))

    assert cfg() == ran  # the same run: rerunning resumes it
    again = cfg("--steps", "80", "--set", "seed=2")
    assert (again.steps, again.seed, again.lr, again.preset) == (80, 2, 3e-3, "w16")
    assert again.run_name != ran.run_name and again.run_name.startswith("pretrain-w16-")
    assert cfg("--storage", str(tmp_path / "s")).run_name == ran.run_name  # moved, same run
    assert cfg("--steps", "80", "--run-name", "mine").run_name == "mine"
    RunSpec(serialize=SerializeConfig()).write(path)
    with pytest.raises(ValueError, match="no pretrain section"):
        cfg()
