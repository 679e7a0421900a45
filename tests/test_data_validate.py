"""Bad input for the reading side: validate (library + CLI) and read_events on broken data sets.

Every case must give a problem naming the file, the row (where there is one) and what is
wrong, a non-zero exit from ``fm4npp data validate``, and leave every file untouched.
"""

from __future__ import annotations

import hashlib
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_event_table

from fm4npp.cli import main
from fm4npp.data.convert import write_dataset
from fm4npp.data.errors import DataError
from fm4npp.data.io import read_events
from fm4npp.data.schema import EVENT_SCHEMA
from fm4npp.data.shards import sha256_file
from fm4npp.data.validate import validate_dataset

N_SHARDS, N_EVENTS = 3, 8
BAD = "events-00001.parquet"  # the shard each case breaks
BAD_ROW = 5


def _tables(modify=None):
    tables = [make_event_table(N_EVENTS, i, first_event_id=i * N_EVENTS) for i in range(N_SHARDS)]
    if modify is not None:
        rows = tables[1].to_pylist()
        modify(rows[BAD_ROW])
        tables[1] = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    return tables


def _hashes(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _check_bad(d, capsys, *words, row=BAD_ROW, file=BAD):
    """Validate (library and CLI) and read: all fail, name file/row/problem, touch nothing."""
    before = _hashes(d)
    problems = validate_dataset(d)
    assert problems, "expected problems"
    text = "\n".join(map(str, problems))
    assert file in text
    if row is not None:
        assert f"row {row}" in text
    for w in words:
        assert w in text, text
    assert main(["data", "validate", str(d)]) == 1
    err = capsys.readouterr().err
    assert file in err and all(w in err for w in words)
    with pytest.raises(DataError) as info:
        for _ in read_events(d):
            pass
    assert file in str(info.value)
    if row is not None:
        assert info.value.row == row
    assert _hashes(d) == before
    return problems


@pytest.fixture
def good(tmp_path):
    d = tmp_path / "ds"
    write_dataset(_tables(), d)
    return d


def test_good_dataset_is_valid_and_readable(good, capsys):
    assert validate_dataset(good) == []
    assert main(["data", "validate", str(good)]) == 0
    events = list(read_events(good))
    assert [int(e["event_id"]) for e in events] == list(range(N_SHARDS * N_EVENTS))
    ev = events[0]
    n = len(ev["hit_x"])
    assert n > 0 and all(len(ev[c]) == n for c in ev if c.startswith("hit_"))
    assert set(ev["hit_track_id"]) <= set(ev["tracks"]["track_id"])
    # columns subset; a single shard
    sub = list(read_events(good / BAD, columns=["event_id", "hit_z"]))
    assert len(sub) == N_EVENTS and set(sub[0]) == {"event_id", "hit_z"}


def test_missing_shard(good, capsys):
    (good / BAD).unlink()
    _check_bad(good, capsys, "missing", row=None)


def test_missing_manifest(good, capsys):
    (good / "manifest.json").unlink()
    before = _hashes(good)
    assert any("manifest missing" in str(p) for p in validate_dataset(good))
    assert main(["data", "validate", str(good)]) == 1
    assert _hashes(good) == before


def test_unparseable_manifest(good, capsys):
    (good / "manifest.json").write_text("{not json")
    assert any("not valid JSON" in str(p) for p in validate_dataset(good))
    assert main(["data", "validate", str(good)]) == 1
    with pytest.raises(DataError, match="manifest.json"):
        next(read_events(good))


def test_corrupt_shard(good, capsys):
    path = good / BAD
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)
    path.write_bytes(bytes(data))
    problems = _check_bad(good, capsys, "sha256", row=None)
    assert sum(BAD in str(p) for p in problems) >= 1


def test_truncated_shard(good, capsys):
    path = good / BAD
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _check_bad(good, capsys, "not a readable Parquet file", row=None)


def test_wrong_schema_version(good, capsys):
    table = pq.read_table(good / BAD)
    table = table.replace_schema_metadata({b"fm4npp.schema_version": b"99"})
    pq.write_table(table, good / BAD)
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["files"][BAD]["sha256"] = sha256_file(good / BAD)  # only the version is wrong
    (good / "manifest.json").write_text(json.dumps(manifest))
    _check_bad(good, capsys, "schema version '99'", row=None)


def test_wrong_manifest_schema_version(good, capsys):
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["schema_version"] = 0
    (good / "manifest.json").write_text(json.dumps(manifest))
    _check_bad(good, capsys, "schema_version 0", row=None, file="manifest.json")


@pytest.mark.parametrize("column,value,word", [("hit_x", math.nan, "non-finite"),
                                               ("hit_z", math.inf, "non-finite"),
                                               ("hit_energy", -math.inf, "non-finite")])
def test_non_finite_values(tmp_path, capsys, column, value, word):
    def modify(row):
        row[column][3] = value
    write_dataset(_tables(modify), tmp_path / "ds")
    problems = _check_bad(tmp_path / "ds", capsys, column, word)
    assert "element 3" in str(problems[0])


@pytest.mark.parametrize("label", [5, -1])
def test_pid_label_out_of_range(tmp_path, capsys, label):
    def modify(row):
        row["hit_pid_class"][0] = label
    write_dataset(_tables(modify), tmp_path / "ds")
    _check_bad(tmp_path / "ds", capsys, "hit_pid_class", "outside 0..4")


def test_track_id_not_in_tracks(tmp_path, capsys):
    def modify(row):
        row["hit_track_id"][2] = 10_000
    write_dataset(_tables(modify), tmp_path / "ds")
    _check_bad(tmp_path / "ds", capsys, "hit_track_id", "not in this event's tracks")


def test_hit_lists_of_different_lengths(tmp_path, capsys):
    def modify(row):
        row["hit_energy"].pop()
    write_dataset(_tables(modify), tmp_path / "ds")
    _check_bad(tmp_path / "ds", capsys, "different lengths")


def test_empty_event(tmp_path, capsys):
    def modify(row):
        for c in row:
            if c.startswith("hit_"):
                row[c] = []
    d = tmp_path / "ds"
    write_dataset(_tables(modify), d)
    _check_bad(d, capsys, "empty event")
    # callers decide: allowed, skipped or kept
    assert validate_dataset(d, allow_empty=True) == []
    assert main(["data", "validate", "--allow-empty", str(d)]) == 0
    assert len(list(read_events(d, empty="skip"))) == N_SHARDS * N_EVENTS - 1
    kept = list(read_events(d, empty="keep"))
    assert len(kept) == N_SHARDS * N_EVENTS and len(kept[N_EVENTS + BAD_ROW]["hit_x"]) == 0


def test_every_problem_listed(tmp_path, capsys):
    """Several problems in several files: all are reported, not just the first."""
    tables = _tables()
    rows0, rows2 = tables[0].to_pylist(), tables[2].to_pylist()
    rows0[1]["hit_y"][0] = math.nan
    rows0[6]["hit_pid_class"][1] = 9
    rows2[4]["hit_z"][0] = math.inf
    tables[0] = pa.Table.from_pylist(rows0, schema=EVENT_SCHEMA)
    tables[2] = pa.Table.from_pylist(rows2, schema=EVENT_SCHEMA)
    d = tmp_path / "ds"
    write_dataset(tables, d)
    (d / "stray.parquet").write_bytes(b"PAR1 garbage")
    text = "\n".join(map(str, validate_dataset(d)))
    assert "events-00000.parquet: row 1 (event_id 1): column hit_y" in text
    assert "events-00000.parquet: row 6 (event_id 6): column hit_pid_class" in text
    assert "events-00002.parquet: row 4 (event_id 20): column hit_z" in text
    assert "stray.parquet: not listed in manifest.json" in text


def test_duplicate_event_ids_across_shards(tmp_path, capsys):
    d = tmp_path / "ds"
    write_dataset([make_event_table(4, 0), make_event_table(4, 1)], d)  # both start at event_id 0
    problems = validate_dataset(d)
    assert any("events-00001.parquet: row 0 (event_id 0)" in str(p) and "also in events-00000" in str(p)
               for p in problems)


def test_replaced_shard_fails_hash_check(good, capsys):
    """A valid Parquet file that is not the one the manifest recorded."""
    pq.write_table(make_event_table(N_EVENTS, 99, first_event_id=N_EVENTS), good / BAD)
    problems = validate_dataset(good)
    assert len(problems) == 1 and BAD in str(problems[0]) and "sha256" in str(problems[0])
    assert len(list(read_events(good))) == N_SHARDS * N_EVENTS  # content itself is fine
    with pytest.raises(DataError, match=f"{BAD}: sha256 does not match"):
        list(read_events(good, verify_hashes=True))


def test_files_describe_themselves_and_declare_no_nullable_field(good):
    """Units, PID class names and the noise definition travel with every shard."""
    from fm4npp.data.schema import NOISE_P_MAX, PID_CLASSES

    schema = pq.read_schema(good / BAD)
    meta = schema.metadata
    assert meta[b"fm4npp.schema_version"] == b"3"
    units = json.loads(meta[b"fm4npp.units"])
    assert units["hit_x"] == units["tracks.vz"] == "cm" and units["tracks.px"] == "GeV/c"
    assert "ADC" in units["hit_energy"]
    assert json.loads(meta[b"fm4npp.pid_classes"]) == {str(k): v for k, v in PID_CLASSES.items()}
    noise = json.loads(meta[b"fm4npp.noise"])
    assert noise["p_max_GeV"] == NOISE_P_MAX == 0.060 and "60 MeV/c" in noise["definition"]

    def fields(typ):
        for f in getattr(typ, "fields", None) or ([typ.value_field] if hasattr(typ, "value_field") else []):
            yield f
            yield from fields(f.type)

    every = [f for top in schema for f in [top, *fields(top.type)]]
    assert len(every) == 1 + 11 * 2 + 2 + 11  # event_id, hit lists + items, tracks + item + fields
    assert not [f.name for f in every if f.nullable]
    assert schema.equals(EVENT_SCHEMA) and schema.metadata == EVENT_SCHEMA.metadata


def _write_v1(d, tables):
    """A data set as schema version 1 wrote it: nullable fields, no units metadata."""
    from fm4npp.data.schema import nullable
    from fm4npp.data.shards import write_manifest

    v1 = pa.schema([(f.name, nullable(f.type)) for f in EVENT_SCHEMA], metadata={b"fm4npp.schema_version": b"1"})
    d.mkdir()
    files = {}
    for i, t in enumerate(tables):
        name = f"events-{i:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(t.to_pylist(), schema=v1), d / name)
        files[name] = {"sha256": sha256_file(d / name), "events": t.num_rows}
    write_manifest(d, {"schema_version": 1, "files": files})


def test_schema_version_1_data_sets_stay_readable(tmp_path):
    d = tmp_path / "v1"
    _write_v1(d, _tables())
    assert pq.read_schema(d / BAD).field("hit_x").nullable
    assert validate_dataset(d) == []
    assert len(list(read_events(d))) == N_SHARDS * N_EVENTS
    # a null in a v1 file is a content problem, with its place
    rows = _tables()[1].to_pylist()
    rows[BAD_ROW]["hit_z"][2] = None
    _write_v1(tmp_path / "v1null", [_tables()[0], pa.Table.from_pylist(rows)])
    text = "\n".join(map(str, validate_dataset(tmp_path / "v1null")))
    assert f"events-00001.parquet: row {BAD_ROW} (event_id {N_EVENTS + BAD_ROW}): column hit_z: 1 null values" in text


def test_version_2_file_declaring_nullable_fields_is_refused(good, capsys):
    table = pq.read_table(good / BAD)
    loose = pa.schema([pa.field(f.name, f.type) if f.name == "hit_energy" else f for f in table.schema],
                      metadata=table.schema.metadata)
    pq.write_table(table.cast(loose), good / BAD)
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["files"][BAD]["sha256"] = sha256_file(good / BAD)
    (good / "manifest.json").write_text(json.dumps(manifest))
    _check_bad(good, capsys, "column hit_energy", "declared nullable", row=None)


def test_every_writer_writes_the_schema(tmp_path):
    """Simulation, the TPCpp-10M import and the toy writer all write EVENT_SCHEMA and its metadata."""
    import numpy as np
    from test_data_convert import _write_split

    from fm4npp.data.convert import import_tpcpp
    from fm4npp.serialize.events import write_toy_shards
    from fm4npp.sim.config import SimConfig
    from fm4npp.sim.run import simulate_shard

    (tmp_path / "sim").mkdir()
    simulate_shard(SimConfig(events=3, seed=1, events_per_shard=3), 0, 3, str(tmp_path / "sim"))
    _write_split(tmp_path / "split", np.random.default_rng(0))
    import_tpcpp(tmp_path / "split", tmp_path / "tpcpp")
    write_toy_shards(tmp_path / "toy", 4, seed=0, events_per_shard=4)
    files = sorted(tmp_path.glob("*/*.parquet"))
    assert {f.parent.name for f in files} == {"sim", "tpcpp", "toy"}
    for f in files:
        schema = pq.read_schema(f)
        assert schema.equals(EVENT_SCHEMA) and schema.metadata == EVENT_SCHEMA.metadata, f


def test_the_one_manifest_reader_names_the_file(tmp_path):
    from fm4npp.data.shards import MANIFEST, read_manifest

    path = tmp_path / MANIFEST
    assert read_manifest(tmp_path, missing_ok=True) is None
    with pytest.raises(DataError, match=f"{path}: manifest missing"):
        read_manifest(tmp_path)
    for text, what in (("{not json", "is not valid JSON"), (b"\xff\xfe\x00{", "is not valid JSON"),
                       ("[1]", "is not a JSON object")):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(DataError, match=f"{path}: manifest {what}") as exc:
            read_manifest(tmp_path, missing_ok=True, hint="do this")
        assert exc.value.hint == "do this" and exc.value.file == str(path)
    path.write_text('{"files": {}}')
    assert read_manifest(tmp_path) == {"files": {}}


def test_schema_version_2_data_sets_read_without_the_subsystem_columns(tmp_path):
    """Version 2 had no hit_subsystem / hit_sigma_* columns: it validates, reads, and reports
    every hit as a TPC hit."""
    from fm4npp.data.report import make_report
    from fm4npp.data.schema import SCHEMA_VERSION_KEY, V3_COLUMNS
    from fm4npp.data.shards import write_manifest

    d = tmp_path / "v2"
    d.mkdir()
    files = {}
    for i, t in enumerate(_tables()):
        t = t.drop_columns(list(V3_COLUMNS))
        t = t.replace_schema_metadata({**t.schema.metadata, SCHEMA_VERSION_KEY: b"2"})
        name = f"events-{i:05d}.parquet"
        pq.write_table(t, d / name)
        files[name] = {"sha256": sha256_file(d / name), "events": t.num_rows}
    write_manifest(d, {"schema_version": 2, "files": files})
    assert validate_dataset(d) == []
    assert "hit_subsystem" not in next(iter(read_events(d)))
    numbers = make_report(d, tmp_path / "fig")["numbers"]["subsystems"]
    assert list(numbers) == ["tpc"] and numbers["tpc"]["hits"] > 0
