"""`fm4npp data import-tpcpp` on a small npz in the public TPCpp-10M layout written here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fm4npp.cli import main
from fm4npp.data.convert import TPCPP_NOTE, import_tpcpp
from fm4npp.data.errors import DataError
from fm4npp.data.io import read_events
from fm4npp.data.validate import validate_dataset

SIZES = [5, 0, 3, 7]  # one empty event


def _write_split(d, rng, sizes=SIZES, label_key="data", pid=None):
    d.mkdir(parents=True)
    n = sum(sizes)
    points = np.column_stack([rng.uniform(20, 600, n), rng.uniform(-70, 70, n),
                              rng.uniform(-70, 70, n), rng.uniform(-100, 100, n)]).astype(np.float32)
    track_ids = np.concatenate([rng.integers(0, 3, s) * 7 + 1 for s in sizes]).astype(np.int64)
    pid = rng.integers(0, 5, n) if pid is None else pid
    noise = rng.integers(0, 2, n).astype(np.int64)
    np.savez(d / "spacepoints.npz", data=points, size=np.array(sizes))
    np.savez(d / "track_ids.npz", **{label_key: track_ids})
    np.savez(d / "pid_labels.npz", data=pid, size=np.array(sizes))
    np.savez(d / "noise_tags.npz", **{label_key: noise})
    return points, track_ids, pid, noise


def test_import_split_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(1)
    points, track_ids, pid, noise = _write_split(tmp_path / "split", rng, label_key="arr_0")
    out = tmp_path / "out"
    assert main(["data", "import-tpcpp", str(tmp_path / "split"), "--out", str(out)]) == 0
    assert validate_dataset(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["note"] == TPCPP_NOTE
    assert manifest["counts"]["events"] == 3 and manifest["counts"]["dropped_empty"] == 1
    events = list(read_events(out))
    assert [int(e["event_id"]) for e in events] == [0, 2, 3]  # index within the split
    offsets = np.concatenate([[0], np.cumsum(SIZES)])
    for ev in events:
        sl = slice(offsets[ev["event_id"]], offsets[ev["event_id"] + 1])
        np.testing.assert_array_equal(ev["hit_energy"], points[sl, 0])
        np.testing.assert_array_equal(np.column_stack([ev["hit_x"], ev["hit_y"], ev["hit_z"]]), points[sl, 1:])
        np.testing.assert_array_equal(ev["hit_track_id"], track_ids[sl])
        np.testing.assert_array_equal(ev["hit_pid_class"], pid[sl])
        np.testing.assert_array_equal(ev["hit_noise"], noise[sl].astype(bool))
        assert (ev["hit_pdg"] == 0).all()
        np.testing.assert_array_equal(ev["tracks"]["track_id"], np.unique(track_ids[sl]))
        for f in ("px", "py", "pz", "vx", "vy", "vz"):
            assert np.isfinite(ev["tracks"][f]).all() and (ev["tracks"][f] == 0).all()
        assert (ev["tracks"]["parent_id"] == -1).all()


def test_import_root_with_splits_and_small_shards(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        _write_split(tmp_path / "src" / "labeled" / split, rng)
    manifests = import_tpcpp(tmp_path / "src", tmp_path / "out", events_per_shard=2, skip_empty=False)
    assert set(manifests) == {"train", "test"}
    for split in ("train", "test"):
        d = tmp_path / "out" / split
        assert len(manifests[split]["files"]) == 2
        assert validate_dataset(d, allow_empty=True) == []
        assert len(list(read_events(d, empty="keep"))) == len(SIZES)


def test_bad_npz_named_with_row_and_nothing_written(tmp_path, capsys):
    rng = np.random.default_rng(3)
    pid = rng.integers(0, 5, sum(SIZES))
    pid[SIZES[0] + 1] = 7  # event 2 (event 1 is empty), point 1
    _write_split(tmp_path / "split", rng, pid=pid)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        import_tpcpp(tmp_path / "split", out)
    assert "pid_labels.npz" in str(info.value) and info.value.row == 2 and "point 1 = " in str(info.value)
    assert not out.exists()
    assert main(["data", "import-tpcpp", str(tmp_path / "split"), "--out", str(out)]) == 1
    assert "pid_labels.npz: row 2" in capsys.readouterr().err


def test_bad_npz_lengths_and_corrupt_file(tmp_path):
    rng = np.random.default_rng(4)
    _write_split(tmp_path / "split", rng)
    np.savez(tmp_path / "split" / "noise_tags.npz", data=np.zeros(3))
    with pytest.raises(DataError, match=r"noise_tags.npz: 3 values, spacepoints.npz has 15 points"):
        import_tpcpp(tmp_path / "split", tmp_path / "out")
    (tmp_path / "split" / "noise_tags.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="noise_tags.npz: not a readable npz"):
        import_tpcpp(tmp_path / "split", tmp_path / "out")
    np.savez(tmp_path / "split" / "spacepoints.npz", data=np.zeros((15, 4)), size=np.array([5, 5]))
    with pytest.raises(DataError, match="sizes sum to 10 but data has 15"):
        import_tpcpp(tmp_path / "split", tmp_path / "out")


def test_refuses_non_empty_output(tmp_path):
    _write_split(tmp_path / "split", np.random.default_rng(5))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(DataError, match="not empty"):
        import_tpcpp(tmp_path / "split", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


def test_report_on_imported_data(tmp_path):
    """Imported data have no kinematics: the kinematic figures still draw, unknown numbers are null."""
    from fm4npp.data import report
    from fm4npp.data.stats import collect, summary_from

    _write_split(tmp_path / "split", np.random.default_rng(6))
    import_tpcpp(tmp_path / "split", tmp_path / "out")
    c = collect(tmp_path / "out")
    numbers = summary_from(c)
    assert numbers["dnch_deta_eta05"] is None and numbers["hits_per_track_pt02_eta05_mean"] is None
    assert numbers["hits_per_event_mean"] == pytest.approx(15 / 3)
    figures = []
    for draw in (report._tracks, report._dedx, report._hits_per_track):
        draw(c, tmp_path, figures)
    assert all((tmp_path / f).stat().st_size > 0 for f in figures) and len(figures) == 3
