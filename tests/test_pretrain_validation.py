"""Pretraining checks what it trains on: `fm4npp pretrain` and `run_pretraining` refuse bad
input before Ray starts, in one line naming the file, the row and the problem; a bad file met
inside a Ray worker ends the run the same way, with the traceback in the run directory."""

from __future__ import annotations

import math
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fresh_mlflow_uri, make_event_table

from fm4npp.cli import main
from fm4npp.data.convert import write_dataset
from fm4npp.data.errors import DataError, Problem, find_data_error
from fm4npp.data.schema import EVENT_SCHEMA
from fm4npp.pretrain.config import PretrainConfig
from fm4npp.pretrain.run import RefusedError, check_inputs, run_pretraining
from fm4npp.serialize.bins import fit_bins_from_dir, save_bins
from fm4npp.serialize.config import SerializeConfig

N_SHARDS, N_EVENTS = 3, 8
BAD = "events-00001.parquet"  # the shard each case breaks
BAD_ROW = 5


def _tables(modify=None, rows=(BAD_ROW,)):
    tables = [make_event_table(N_EVENTS, i, first_event_id=i * N_EVENTS, max_tracks=4)
              for i in range(N_SHARDS)]
    if modify is not None:
        records = tables[1].to_pylist()
        for r in rows:
            modify(records[r])
        tables[1] = pa.Table.from_pylist(records, schema=EVENT_SCHEMA)
    return tables


def _fit(d):
    save_bins(fit_bins_from_dir(d, SerializeConfig(k=4, n_difficulty_bins=3)), d / "bins.json")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid data set with bins fitted on it (they record its manifest)."""
    d = tmp_path_factory.mktemp("good") / "ds"
    write_dataset(_tables(), d)
    _fit(d)
    return d


@pytest.fixture(autouse=True)
def _no_ray_running():
    import ray

    assert not ray.is_initialized(), "these tests must find no Ray running"


def _copy(good, tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(good, d)
    return d


def _rewrite(good, tmp_path, modify, rows=(BAD_ROW,)):
    """The good data set with rows of BAD changed (manifest consistent, bins of the original)."""
    d = tmp_path / "ds"
    write_dataset(_tables(modify, rows), d)
    shutil.copy(good / "bins.json", d / "bins.json")
    return d


def _pid(row):
    row["hit_pid_class"][0] = 7


def _nan(row):
    row["hit_x"][3] = math.nan


def _empty(row):
    for c in row:
        if c.startswith("hit_"):
            row[c] = []


def _no_manifest(good, tmp_path):
    d = _copy(good, tmp_path)
    (d / "manifest.json").unlink()
    return d


def _other_bins(good, tmp_path):
    other = tmp_path / "other"
    write_dataset([make_event_table(N_EVENTS, 99, max_tracks=4)], other)
    _fit(other)
    d = _copy(good, tmp_path)
    shutil.copy(other / "bins.json", d / "bins.json")
    return d


def _truncated(good, tmp_path):
    d = _copy(good, tmp_path)
    path = d / BAD
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return d


def _renamed_column(good, tmp_path):
    d = _copy(good, tmp_path)
    table = pq.read_table(d / BAD)
    pq.write_table(table.rename_columns(["x" if c == "hit_x" else c for c in table.column_names])
                   .replace_schema_metadata(table.schema.metadata), d / BAD)
    return d


CASES = {  # name: (make the data set, words of the message, row named)
    "pid outside 0..4": (lambda g, t: _rewrite(g, t, _pid),
                         [BAD, "hit_pid_class", "= 7", "outside 0..4"], True),
    "empty event": (lambda g, t: _rewrite(g, t, _empty), [BAD, "empty event"], True),
    "NaN value": (lambda g, t: _rewrite(g, t, _nan), [BAD, "column hit_x", "non-finite", "nan"], True),
    "no manifest": (_no_manifest, ["manifest.json", "manifest missing"], False),
    "bins of another data set": (_other_bins, ["refused", "bins.json", "fitted on another data set",
                                               "fm4npp serialize fit"], False),
    "truncated shard": (_truncated, [BAD, "not a readable Parquet file"], False),
    "renamed column": (_renamed_column, [BAD, "column hit_x", "column missing"], False),
    "no data directory": (lambda g, t: t / "nowhere", ["data directory", "nowhere does not exist"], False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_refuses_bad_input_in_one_line_before_ray(case, good, tmp_path, capsys):
    import ray

    make, words, has_row = CASES[case]
    d = make(good, tmp_path)
    rc = main(["pretrain", "--preset", "w16", "--data", str(d), "--steps", "1",
               "--set", f"storage_path={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("fm4npp pretrain: "), err
    for w in words:
        assert w in err, err
    if has_row:
        assert f"row {BAD_ROW} (event_id {N_EVENTS + BAD_ROW})" in err
    assert not ray.is_initialized()
    assert not (tmp_path / "runs").exists()  # no run dir, no MLflow run


@pytest.mark.parametrize("case,error", [("pid outside 0..4", DataError), ("truncated shard", DataError),
                                        ("bins of another data set", RefusedError),
                                        ("no data directory", RefusedError)])
def test_library_refuses_before_ray(case, error, good, tmp_path):
    import ray

    d = CASES[case][0](good, tmp_path)
    cfg = PretrainConfig(preset="w16", data=str(d), steps=1, storage_path=str(tmp_path / "runs"))
    with pytest.raises(error) as info:
        run_pretraining(cfg)
    if error is DataError:
        assert info.value.file.endswith(BAD)
        assert info.value.row == (BAD_ROW if case.startswith("pid") else None)
    assert not ray.is_initialized()
    assert not (tmp_path / "runs").exists()


def test_many_problems_give_the_first_few_and_a_count(good, tmp_path, capsys):
    d = _rewrite(good, tmp_path, _nan, rows=range(N_EVENTS))
    assert main(["pretrain", "--preset", "w16", "--data", str(d), "--set",
                 f"storage_path={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.count("non-finite") == 3 and "row 0 " in err and "row 2 " in err and "row 3 " not in err
    assert f"and {N_EVENTS - 3} more problems: run `fm4npp data validate {d}` for all" in err


def test_skip_validation_keeps_only_what_makes_training_impossible(good, tmp_path):
    def cfg(d, **kw):
        return PretrainConfig(preset="w16", data=str(d), **kw).resolved()

    bad = _rewrite(good, tmp_path, _pid)
    check_inputs(cfg(bad), skip_validation=True)  # the user knows better
    with pytest.raises(DataError):
        check_inputs(cfg(bad))
    with pytest.raises(RefusedError, match="does not exist"):
        check_inputs(cfg(tmp_path / "nowhere"), skip_validation=True)
    with pytest.raises(RefusedError, match="no serialization bins"):
        check_inputs(cfg(bad, bins=str(tmp_path / "none.json")), skip_validation=True)


def test_a_passed_check_is_remembered_until_a_file_changes(good, tmp_path):
    d = _copy(good, tmp_path)
    cfg = PretrainConfig(preset="w16", data=str(d)).resolved()
    check_inputs(cfg)
    check_inputs(cfg)  # remembered (the CLI and run_pretraining both check)
    write_dataset(_tables(_pid), d)  # same names, new content and manifest
    with pytest.raises(DataError, match="outside 0..4"):
        check_inputs(cfg)


def test_serialize_failure_names_file_and_row():
    """What a Ray Data actor raises for an event it cannot serialize (--skip-validation)."""
    from fm4npp.data import pipeline
    from fm4npp.data.io import table_to_events
    from fm4npp.serialize.bins import fit_bins
    from fm4npp.serialize.config import PipelineConfig

    table = make_event_table(6, 0, max_tracks=4)
    bins = fit_bins(table_to_events(table), SerializeConfig(k=4, n_difficulty_bins=3))
    rows = table.to_pylist()
    rows[3]["hit_energy"].pop()
    batch = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA).select(pipeline.READ_COLUMNS)
    batch = batch.append_column("_file", pa.array(["x/events-00007.parquet"] * 6)) \
                 .append_column("_row", pa.array(range(10, 16), pa.int64()))
    cfg = PipelineConfig(serialize=SerializeConfig(k=4), split_fractions=(1.0, 0.0, 0.0))
    with pytest.raises(DataError) as info:
        pipeline.SerializeBatch(bins.content, cfg.to_dict(), "train")(batch)
    assert info.value.one_line().startswith("x/events-00007.parquet: row 13 (event_id 3): cannot serialize")
    assert "lengths differ" in str(info.value)


def test_read_task_failure_names_file_and_rows(good, tmp_path):
    """What a Ray Data read task raises for a shard corrupt past its footer (--skip-validation)."""
    from fm4npp.data import pipeline
    from fm4npp.data.ray_errors import RayDataError

    d = _copy(good, tmp_path)
    ok = pipeline.read_shards(pa.table({"path": [str(d / "events-00000.parquet")]}))
    assert ok.num_rows == N_EVENTS and ok.column("_row").to_pylist() == list(range(N_EVENTS))
    data = bytearray((d / BAD).read_bytes())
    data[len(data) // 3:len(data) // 3 + 200] = bytes(200)
    (d / BAD).write_bytes(bytes(data))
    with pytest.raises(RayDataError) as info:
        pipeline.read_shards(pa.table({"path": [str(d / BAD)]}))
    assert info.value.file == str(d / BAD) and info.value.row == 0
    assert f"rows 0..{N_EVENTS - 1} unreadable" in info.value.one_line()


def test_data_error_found_through_ray_wrappers():
    """Ray Data tasks, Ray Train workers and the controller each wrap what they raise."""
    from ray.exceptions import RayTaskError
    from ray.train import ControllerError, WorkerGroupError

    from fm4npp.data.ray_errors import RayDataError

    cause = RayDataError(Problem("d/events-00001.parquet", "rows 0..7 unreadable", row=0))
    task = RayTaskError("read", "Traceback ...", cause, proctitle="x", pid=1, ip="127.0.0.1")
    task = task.as_instanceof_cause()  # what ray.get raises
    workers = WorkerGroupError("rank 0 failed", {0: task})
    for exc in (cause, task, workers, ControllerError(workers)):
        err = find_data_error(exc)
        assert type(err) is RayDataError
        assert err.one_line() == "d/events-00001.parquet: row 0: rows 0..7 unreadable"
    try:
        try:
            raise cause
        except DataError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as chained:
        assert find_data_error(chained) is cause
    assert find_data_error(RuntimeError("no data here")) is None


@pytest.fixture
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.mark.slow
def test_error_inside_a_ray_worker_is_one_line_with_the_traceback_logged(good, tmp_path, monkeypatch,
                                                                        ray_local, capsys):
    """A shard whose pages are corrupt (footer intact: only reading its rows finds it), past
    --skip-validation: the Ray Data actor's error reaches the user as one line."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path))
    d = _copy(good, tmp_path)
    data = bytearray((d / BAD).read_bytes())
    data[len(data) // 3:len(data) // 3 + 200] = bytes(200)
    (d / BAD).write_bytes(bytes(data))
    rc = main(["pretrain", "--preset", "w16", "--data", str(d), "--steps", "1", "--skip-validation",
               "--set", f"storage_path={tmp_path / 'runs'}", "--set", "max_failures=0"])
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fm4npp pretrain")]
    assert rc == 1 and len(ours) == 1, ours
    assert f"{d / BAD}: row 0: rows 0..{N_EVENTS - 1} unreadable (corrupt or truncated?)" in ours[0]
    log = ours[0].rsplit("(traceback in ", 1)[1].rstrip(")")
    assert log.startswith(str(tmp_path / "runs")) and log.endswith("fm4npp_error.log")
    text = open(log).read()
    assert "Traceback" in text and "read_shards" in text  # the worker side too
