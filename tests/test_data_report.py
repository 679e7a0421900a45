"""`fm4npp data report`: figures are drawn, and the numbers are right on hand-made events."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import make_event_table

from fm4npp.cli import main
from fm4npp.data.convert import write_dataset
from fm4npp.data.schema import EVENT_SCHEMA
from fm4npp.data.stats import physics_summary, truncated_mean


def _track(tid, pdg, charge, pt, eta, nhits, primary=True, energy=None, noise=False):
    """A track dict and its hits (at made-up radii) as (track, hits)."""
    r = 31.0 + np.arange(nhits)
    hits = {"hit_x": r.tolist(), "hit_y": [0.0] * nhits, "hit_z": (r * np.sinh(eta)).tolist(),
            "hit_energy": (energy if energy is not None else [100.0] * nhits),
            "hit_track_id": [tid] * nhits, "hit_pdg": [pdg] * nhits,
            "hit_pid_class": [1 if abs(pdg) == 211 else 0] * nhits, "hit_noise": [noise] * nhits,
            "hit_subsystem": [0] * nhits, "hit_sigma_rphi": [0.015] * nhits, "hit_sigma_z": [0.05] * nhits}
    track = {"track_id": tid, "pdg": pdg, "charge": charge, "px": pt, "py": 0.0, "pz": pt * np.sinh(eta),
             "vx": 0.0, "vy": 0.0, "vz": 0.0, "parent_id": -1 if primary else 1, "is_primary": primary}
    return track, hits


def _table(events):
    rows = []
    for eid, tracks in enumerate(events):
        row = {"event_id": eid, "tracks": []}
        for track, hits in tracks:
            row["tracks"].append(track)
            for k, v in hits.items():
                row.setdefault(k, []).extend(v)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


def test_truncated_mean_keeps_lowest_70_percent():
    values = np.array([10, 1, 9, 2, 8, 3, 7, 4, 6, 5, 100.0])
    groups = np.array([0] * 10 + [1])
    np.testing.assert_allclose(truncated_mean(values, groups, 2), [4.0, 100.0])


def test_numbers_on_hand_made_events(tmp_path):
    events = [
        [_track(1, 211, 1, 0.5, 0.0, 46), _track(2, -211, -1, 0.3, 0.3, 40),
         _track(3, 2212, 1, 1.0, 0.8, 10),                # |eta| > 0.5
         _track(4, 22, 0, 1.0, 0.0, 0),                   # neutral: not in dNch/deta
         _track(5, 11, -1, 0.02, 0.1, 4, primary=False, noise=True)],  # secondary
        [_track(1, 321, 1, 0.1, -0.2, 30)],               # pT < 0.2: not in hits-per-track
    ]
    write_dataset([_table(events)], tmp_path / "ds")
    s = physics_summary(tmp_path / "ds")
    assert s["n_events"] == 2
    assert s["dnch_deta_eta05"] == pytest.approx(3 / 2)  # tracks 1, 2 and the kaon
    assert s["hits_per_track_pt02_eta05_mean"] == pytest.approx(43.0)
    assert s["hits_per_event_mean"] == pytest.approx((100 + 30) / 2)
    assert s["tracks_per_event_mean"] == pytest.approx(3.0)
    assert s["noise_hit_fraction"] == pytest.approx(4 / 130)
    assert s["pid_class_hit_fractions"]["pi+-"] == pytest.approx(86 / 130)


def test_report_cli_writes_figures_and_json(tmp_path, capsys):
    write_dataset([make_event_table(15, 0), make_event_table(15, 1, first_event_id=15)], tmp_path / "ds")
    figdir = tmp_path / "fig"
    assert main(["data", "report", str(tmp_path / "ds"), "--out", str(figdir), "--display-event", "3"]) == 0
    report = json.loads((figdir / "report.json").read_text())
    assert report["numbers"]["n_events"] == 30
    assert "2.39" in report["expectations"]["dnch_deta_eta05"]
    assert set(report["figures"]) >= {"hits_tracks_per_event.png", "hit_r_z_phi.png", "dedx_vs_p.png",
                                      "class_fractions.png", "hits_per_track_vs_pt.png", "event_display.png",
                                      "subsystems.png"}
    # the synthetic events are TPC only, one hit per layer at conftest's 48 radii
    tpc = report["numbers"]["subsystems"]["tpc"]
    assert list(report["numbers"]["subsystems"]) == ["tpc"] and len(tpc["layers"]["r_cm"]) == 48
    assert sum(tpc["layers"]["hits"]) == tpc["hits"] and tpc["hits_per_event"] * 30 == tpc["hits"]
    for name in report["figures"]:
        assert (figdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dnch_deta_eta05" in capsys.readouterr().out


def test_report_on_bad_data_fails_cleanly(tmp_path, capsys):
    rows = make_event_table(4, 0).to_pylist()
    rows[2]["hit_x"][0] = float("nan")
    write_dataset([pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)], tmp_path / "ds")
    assert main(["data", "report", str(tmp_path / "ds"), "--out", str(tmp_path / "fig")]) == 1
    err = capsys.readouterr().err
    assert "events-00000.parquet: row 2 (event_id 2): column hit_x" in err
