"""PYTHIA -> Parquet runs: determinism, resume after a kill, manifest, physics sanity, CLI errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fm4npp.data import shards
from fm4npp.data.schema import EVENT_SCHEMA, SCHEMA_VERSION
from fm4npp.sim.config import SimConfig
from fm4npp.sim.run import run_simulation, shard_name


def _hashes(d: Path) -> dict:
    return {p.name: shards.sha256_file(p) for p in sorted(d.glob("*.parquet"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """3 shards x 20 events, seed 11, in-process."""
    out = tmp_path_factory.mktemp("ref")
    cfg = SimConfig(events=60, seed=11, events_per_shard=20)
    manifest = run_simulation(cfg, out, progress=False)
    return out, cfg, manifest


def test_manifest_and_schema(reference):
    out, cfg, manifest = reference
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["complete"]
    assert manifest["counts"]["events"] == 60 and manifest["counts"]["shards"] == 3
    assert set(manifest["files"]) == {shard_name(b) for b in range(3)}
    for name, entry in manifest["files"].items():
        assert shards.sha256_file(out / name) == entry["sha256"]
        t = pq.read_table(out / name)
        assert t.schema.equals(EVENT_SCHEMA, check_metadata=False) and t.num_rows == entry["events"] == 20
    ids = np.concatenate([pq.read_table(out / n, columns=["event_id"])["event_id"].to_numpy() for n in sorted(manifest["files"])])
    np.testing.assert_array_equal(ids, np.arange(60))
    assert manifest["detector"]["name"] == "sphenix_tpc" and manifest["seeds"]["seed"] == 11
    assert "SoftQCD:inelastic = on" in manifest["generator"]["settings"]


def test_same_seed_same_bytes_other_seed_differs(reference, tmp_path):
    out, cfg, _ = reference
    # one shard of the same run again, alone: identical bytes
    from fm4npp.sim.run import simulate_shard

    entry = simulate_shard(cfg, 1, 20, str(tmp_path))
    assert entry["sha256"] == shards.sha256_file(out / shard_name(1))
    other = simulate_shard(SimConfig(**{**cfg.__dict__, "seed": 12}), 1, 20, str(tmp_path))
    assert other["sha256"] != entry["sha256"]


def test_truth_is_consistent(reference):
    out, _, _ = reference
    t = pq.read_table(out / shard_name(0)).to_pylist()
    for ev in t:
        tracks = ev["tracks"]
        ids = [tr["track_id"] for tr in tracks]
        assert ids == list(range(len(tracks)))
        assert set(ev["hit_track_id"]) <= set(ids)
        for tr in tracks:
            assert -1 <= tr["parent_id"] < len(tracks)
            assert tr["is_primary"] == (tr["parent_id"] == -1) or tr["is_primary"]  # mothers of decays are primaries
        for tid, pdg, noise in zip(ev["hit_track_id"], ev["hit_pdg"], ev["hit_noise"]):
            tr = tracks[tid]
            assert tr["pdg"] == pdg
            p = np.sqrt(tr["px"] ** 2 + tr["py"] ** 2 + tr["pz"] ** 2)
            assert noise == (p < 0.060)
        r = np.hypot(ev["hit_x"], ev["hit_y"])
        assert r.min() > 31.0 and r.max() < 76.0
        assert np.abs(ev["hit_z"]).min() >= 0.28 and np.abs(ev["hit_z"]).max() <= 102.61


def test_resume_after_kill(reference, tmp_path):
    ref, cfg, _ = reference
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fm4npp.cli", "simulate", "--events", "60", "--seed", "11",
           "--events-per-shard", "20", "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill it as soon as the first shard is committed
            man = shards.read_manifest(out) if (out / "manifest.json").exists() else None
            if man and len(man["files"]) >= 1 or proc.poll() is not None:
                break
            time.sleep(0.01)
    finally:
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the kill really interrupted the run: it was still running, died of SIGKILL, and left a
    # partial manifest (some shards committed, not all, not complete) for the resume to finish
    assert running and proc.returncode == -signal.SIGKILL, (
        f"the simulation ended (rc {proc.returncode}) before it could be killed: resume not tested")
    before = shards.read_manifest(out)
    assert not before["complete"] and 1 <= len(before["files"]) < 3, before
    committed = {name: (out / name).stat().st_mtime_ns for name in before["files"]}
    # a torn write from the killed process, and a stale shard not in the manifest
    (out / ".shard-00002.parquet.x.tmp").write_bytes(b"PAR1 torn")
    manifest = run_simulation(cfg, out, progress=False)
    assert manifest["complete"] and manifest["counts"]["events"] == 60
    assert _hashes(out) == _hashes(ref)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    # shards committed before the kill are kept, not redone
    assert {name: (out / name).stat().st_mtime_ns for name in committed} == committed
    # rerun with everything done: nothing is rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    run_simulation(cfg, out, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == mtimes


def test_corrupt_shard_is_redone_and_other_config_refused(reference, tmp_path):
    ref, cfg, _ = reference
    out = tmp_path / "c"
    out.mkdir()
    for p in ref.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    data = (out / shard_name(2)).read_bytes()
    (out / shard_name(2)).write_bytes(data[: len(data) // 2])  # truncated
    run_simulation(cfg, out, progress=False)
    assert _hashes(out) == _hashes(ref)
    with pytest.raises(ValueError, match="another configuration"):
        run_simulation(SimConfig(**{**cfg.__dict__, "seed": 99}), out, progress=False)


def test_physics_sanity(tmp_path):
    cfg = SimConfig(events=200, seed=5, events_per_shard=200)
    manifest = run_simulation(cfg, tmp_path, progress=False)
    c = manifest["counts"]
    from fm4npp.data.stats import physics_summary
    from fm4npp.sim.geometry import sphenix_tpc

    s = physics_summary(tmp_path)
    # PYTHIA 8 Detroit inelastic: dNch/deta(|eta|<0.5) = 2.39 (physics.md), within 3 standard
    # errors of this sample's mean (~0.09 for 200 stored events)
    assert c["generator_dnch_deta_eta05"] == pytest.approx(2.39, abs=3 * s["dnch_deta_eta05_stat_error"])
    assert s["dnch_deta_eta05_stat_error"] < 0.15
    # hits per primary charged track that does not curl (2R > 76.2 cm, R[cm] = 238.2 pT[GeV]/|q|
    # at 1.4 T): the helix from its vertex crosses layer r_i at z = vz + 2R asin(r_i/2R) pz/pT;
    # count the layers with 0.28 < |z| < 102.6 cm, times the module's active phi fraction
    # (0.960 / 0.972 / 0.972). Decays in flight and scattering lose a few percent (~3 % here):
    # the hits found are 92-100 % of that prediction.
    table = pq.read_table(tmp_path / shard_name(0), columns=["hit_track_id", "tracks"]).to_pylist()
    det = sphenix_tpc()
    radii = np.asarray(det.layer_radii)
    active = np.concatenate([np.full(m.n_layers, m.active_phi_fraction) for m in det.modules])
    predicted = found = 0.0
    for ev in table:
        tid = np.asarray(ev["hit_track_id"])
        for tr in ev["tracks"]:
            pt = np.hypot(tr["px"], tr["py"])
            two_r = 2 * 238.2 * pt / abs(tr["charge"]) if tr["charge"] else 0.0
            if not tr["is_primary"] or two_r <= 76.2:
                continue
            z = tr["vz"] + two_r * np.arcsin(radii / two_r) * tr["pz"] / pt
            predicted += float((active * ((np.abs(z) > 0.28) & (np.abs(z) < 102.6))).sum())
            found += int((tid == tr["track_id"]).sum())
    assert predicted > 100 * c["events"]  # the check has tracks to work on
    assert 0.92 <= found / predicted <= 1.0
    # all hits: those primaries plus loopers, secondaries and noise (~30 % more here)
    assert predicted / c["events"] <= s["hits_per_event_mean"] <= 1.5 * predicted / c["events"]
    # pT > 0.2 GeV/c, |eta| < 0.5: 48 layers x mean active phi fraction 0.968 = 46.5, less the
    # few percent lost in flight (6 % tolerance), never more than one hit per layer
    assert s["hits_per_track_pt02_eta05_mean"] == pytest.approx(48 * 0.968, rel=0.06)
    assert s["hits_per_track_pt02_eta05_mean"] <= 48
    assert s["pid_class_hit_fractions"]["pi+-"] > 0.6
    assert 0.0 < s["noise_hit_fraction"] < 0.1
    e = np.concatenate(pq.read_table(tmp_path / shard_name(0), columns=["hit_energy"])["hit_energy"].to_numpy(zero_copy_only=False))
    assert e.mean() == pytest.approx(253, rel=0.1)  # TPCpp-10M ADC scale: mean 253 (physics.md)


def test_cli_bad_input(tmp_path, capsys):
    from fm4npp.cli import main

    assert main(["simulate", "--events", "0", "--seed", "1", "--out", str(tmp_path / "x")]) != 0
    assert not (tmp_path / "x").exists()
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "manifest.json").write_text("{not json")
    assert main(["simulate", "--events", "5", "--seed", "1", "--out", str(tmp_path / "y")]) == 1
    assert "manifest" in capsys.readouterr().err
    assert (tmp_path / "y" / "manifest.json").read_text() == "{not json"


@pytest.mark.slow
def test_ray_workers_give_the_same_bytes(reference, tmp_path):
    ray = pytest.importorskip("ray")
    ref, cfg, _ = reference
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        manifest = run_simulation(SimConfig(**{**cfg.__dict__, "workers": 2}), tmp_path, progress=False)
    finally:
        ray.shutdown()
    assert manifest["complete"] and _hashes(tmp_path) == _hashes(ref)
