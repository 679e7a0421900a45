"""fm4npp.files: the atomic writers every layer uses."""

import json
import os

import pytest

from fm4npp.files import TMP_SUFFIX, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writers_replace_the_file_and_leave_no_temporary(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("old")
    atomic_write_json(p, {"b": 1, "a": [1.5]}, indent=1, sort_keys=True)
    assert p.read_text() == json.dumps({"a": [1.5], "b": 1}, indent=1, sort_keys=True) + "\n"
    atomic_write_json(p, {"x": 1}, newline=False)
    assert p.read_text() == '{"x": 1}'
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\0\1")
    assert (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.json", "b.bin", "t.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "m.json"
    p.write_text("old")
    with pytest.raises(ValueError):
        atomic_write_json(p, {"x": float("nan")}, allow_nan=False)
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        # hidden and with the suffix data.shards.clean_tmp looks for
        assert os.path.basename(tmp).startswith(".m.json.") and tmp.endswith(TMP_SUFFIX)
        open(tmp, "w").write("half")
        raise RuntimeError("writer died")
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["m.json"]


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
