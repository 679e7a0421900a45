"""The default data set (no --data): simulated once into the data home, reused afterwards."""

import pytest


def test_default_data_set_is_made_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FM4NPP_HOME", str(tmp_path / "home"))
    import fm4npp.sim.run as sim_run
    from fm4npp.data.io import read_events
    from fm4npp.data.shards import read_manifest
    from fm4npp.pretrain import default_data
    from fm4npp.serialize.bins import load_bins

    path = default_data.ensure_default_dataset(events=12, progress=False)
    assert path.is_relative_to(tmp_path / "home" / "datasets")
    assert read_manifest(path)["complete"]
    assert len(list(read_events(path))) == 12
    load_bins(path / "bins.json")  # fitted and verifiable
    stamp = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}

    def no_second_simulation(*a, **k):
        raise AssertionError("the default data set was simulated again")

    monkeypatch.setattr(sim_run, "run_simulation", no_second_simulation)
    assert default_data.ensure_default_dataset(events=12, progress=False) == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == stamp

    # other generator settings are another data set, never the cached one
    assert default_data.default_dataset_dir(events=13) != path
    assert default_data.default_dataset_dir(events=12, seed=2) != path


def test_a_half_made_default_set_is_not_taken_as_ready(tmp_path, monkeypatch):
    monkeypatch.setenv("FM4NPP_HOME", str(tmp_path / "home"))
    from fm4npp.pretrain import default_data

    path = default_data.default_dataset_dir(events=12)
    path.mkdir(parents=True)
    (path / "bins.json").write_text("{}")  # bins but no complete manifest: a killed first run
    assert not default_data.is_ready(path)


def test_study_rejects_a_bad_data_argument(tmp_path, capsys):
    from fm4npp.study.driver import main

    not_data = tmp_path / "photos"
    not_data.mkdir()
    assert main("data_scaling", ["--data", str(not_data), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(not_data) in err and "not a data set" in err
    with pytest.raises(SystemExit):
        main("model_scaling", ["--preset", "nope"])


def test_another_detector_and_facility_is_its_own_default_set(tmp_path, monkeypatch):
    monkeypatch.setenv("FM4NPP_HOME", str(tmp_path / "home"))
    from fm4npp.data.shards import read_manifest
    from fm4npp.pretrain import default_data
    from fm4npp.serialize.bins import load_bins

    path = default_data.ensure_default_dataset(events=6, progress=False, detector="zeus",
                                               facility="hera_ep")
    assert path.name.startswith("zeus-hera_ep-")
    assert path != default_data.default_dataset_dir(events=6)
    assert path != default_data.default_dataset_dir(events=6, detector="zeus", facility="eic_ep")
    m = read_manifest(path)
    assert m["complete"] and "zeus" in str(m) and "hera_ep" in str(m)
    assert load_bins(path / "bins.json").content["config"]["detector"] == "zeus"
