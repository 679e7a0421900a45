"""Facilities as data (issue 20): the generator per collider, checked as a physicist would
(Z-pole multiplicity, the DIS scattered electron and the lab-frame boost), detector x facility
runs with their manifest, and bad facility files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from fm4npp.data.schema import SUBSYSTEM_IDS
from fm4npp.data.validate import validate_dataset
from fm4npp.sim.config import GeneratorConfig, SimConfig
from fm4npp.sim.facility import load_facility
from fm4npp.sim.generator import PythiaGenerator
from fm4npp.sim.run import run_simulation
from fm4npp.sim.spec_files import HERE, SpecFileError


def _events(facility: str, n: int, seed: int = 4242) -> dict:
    return PythiaGenerator(GeneratorConfig(facility=facility), seed).generate(n)


def test_z_pole_charged_multiplicity():
    """e+e- -> Z -> hadrons: <n_ch> = 20.76 +- 0.16 (PDG; PYTHIA 20.1-20.6, genesis.md), full
    acceptance, K0S/Lambda decay products included; a neutral initial state."""
    n = 400
    g = _events("lep_z", n)
    charged = g["q"] != 0
    nch = np.bincount(g["ev"][charged], minlength=n)
    assert 19.6 < nch.mean() < 21.6  # +- 3 standard errors (rms ~6.4) around 20.6
    assert np.all(nch % 2 == 0)
    np.testing.assert_allclose(np.bincount(g["ev"], weights=g["q"], minlength=n), 0, atol=1e-9)


@pytest.mark.parametrize("facility,e_beam,e_proton", [("hera_ep", 27.5, 920.0), ("eic_ep", 18.0, 275.0)])
def test_dis_events_have_the_scattered_electron(facility, e_beam, e_proton):
    """Every NC DIS event holds its scattered e-, with Q2 = 2 E E' (1 + cos theta) > 25 GeV^2
    (electron method; theta from the proton direction +z), in the lab frame (frameType 2)."""
    n = 150
    g = _events(facility, n)
    e = np.sqrt(g["px"] ** 2 + g["py"] ** 2 + g["pz"] ** 2)
    q2 = np.full(n, np.nan)
    for i in range(n):
        ele = np.nonzero((g["ev"] == i) & (g["pdg"] == 11))[0]
        assert len(ele), f"event {i} has no final-state electron"
        j = ele[np.argmax(e[ele])]
        q2[i] = 2 * e_beam * e[j] * (1 + g["pz"][j] / e[j])
    assert q2.min() > 25.0 * 0.999 and 30 < np.median(q2) < 80
    # lab frame: the hadronic final state flies along the proton (+z), far beyond the electron beam
    pz_sum = np.bincount(g["ev"], weights=g["pz"], minlength=n)
    assert np.median(pz_sum) > 0.1 * e_proton


@pytest.mark.parametrize("facility", ["rhic_pp200", "lep_z", "hera_ep", "eic_ep"])
def test_a_seed_gives_the_same_events_in_any_process_history(facility, monkeypatch):
    """PYTHIA is initialised once per process and reseeded per block: a block's events must not
    depend on what the instance generated before, nor on whether it was initialised afresh."""
    from fm4npp.sim import generator

    def key(g):
        return {k: g[k] for k in ("ev", "pdg", "px", "py", "pz", "vz", "mother")}

    cfg = GeneratorConfig(facility=facility)
    monkeypatch.setattr(generator, "_INITIALISED", {})
    fresh = key(PythiaGenerator(cfg, 77).generate(40))
    other = PythiaGenerator(cfg, 5)
    other.generate(120)
    again = PythiaGenerator(cfg, 77)
    for k, v in key(again.generate(40)).items():
        np.testing.assert_array_equal(v, fresh[k], err_msg=k)
    with pytest.raises(RuntimeError, match="reseeded by a newer generator"):
        other.generate(1)


@pytest.mark.parametrize("detector,facility,subsystems", [
    ("aleph", "lep_z", ["vdet", "itc", "tpc"]),
    ("zeus", "hera_ep", ["ctd"]),
    ("sphenix", "rhic_pp200", ["mvtx", "intt", "tpc"]),
])
def test_detector_facility_run_and_its_manifest(tmp_path, detector, facility, subsystems):
    cfg = SimConfig(events=8, seed=2, events_per_shard=8, detector=detector,
                    generator=GeneratorConfig(facility=facility))
    manifest = run_simulation(cfg, tmp_path, progress=False)
    assert validate_dataset(tmp_path) == []
    fac_file = HERE / "facilities" / f"{facility}.toml"
    det_file = HERE / "detectors" / f"{detector}.toml"
    assert manifest["facility"]["name"] == facility and manifest["detector"]["name"] == detector
    assert manifest["facility"]["sha256"] == hashlib.sha256(fac_file.read_bytes()).hexdigest()
    assert manifest["detector"]["sha256"] == hashlib.sha256(det_file.read_bytes()).hexdigest()
    assert manifest["generator"]["settings"][:len(load_facility(facility).beams)] == list(load_facility(facility).beams)
    assert manifest["config"]["files"]["detector"]["sha256"] == manifest["detector"]["sha256"]
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "shard-00000.parquet")
    sub = t.column("hit_subsystem").combine_chunks().flatten().to_numpy()
    assert sorted(set(sub.tolist())) == sorted(SUBSYSTEM_IDS[s] for s in subsystems)
    assert json.loads(t.schema.metadata[b"fm4npp.subsystems"])[str(SUBSYSTEM_IDS[subsystems[0]])] == subsystems[0]


def test_lep_beam_spot_reaches_the_vertices(tmp_path):
    """The facility's beam spot (LEP: sigma_z 1 cm) is where the primaries start."""
    cfg = SimConfig(events=30, seed=5, events_per_shard=30, detector="aleph", generator=GeneratorConfig(facility="lep_z"))
    run_simulation(cfg, tmp_path, progress=False)
    import pyarrow.parquet as pq

    tracks = pq.read_table(tmp_path / "shard-00000.parquet").column("tracks").combine_chunks().flatten()
    primary = tracks.field("is_primary").to_numpy(zero_copy_only=False) & (tracks.field("parent_id").to_numpy() < 0)
    vz = tracks.field("vz").to_numpy()[primary]
    # robust width: a decayed mother from a cascade (Xi -> Lambda) starts displaced
    event_vz = np.median(vz)
    assert 0.6 < 1.4826 * np.median(np.abs(vz - event_vz)) < 1.5


BAD = [  # (replace this, with that) in lep_z.toml -> the key named in the error
    ('sigma_z = 1.0', 'sigma_z = -1.0', "beam_spot.sigma_z: -1.0: must be > 0"),
    ('[beam_spot]', '[beamspot]', "beam_spot: missing"),
    ('reuse_mpi_init = false', 'reuse_mpi_init = false\ntunes = []', "tunes: unknown key here"),
    ('reuse_mpi_init = false', 'reuse_mpi_init = "no"', "reuse_mpi_init: must be bool"),
    ('"23:onMode = off",', '"23:onMode off",', "process: '23:onMode off' is not a PYTHIA"),
]


@pytest.mark.parametrize("old,new,message", BAD)
def test_malformed_facility_file_names_the_file_and_the_key(tmp_path, old, new, message):
    text = (HERE / "facilities" / "lep_z.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(SpecFileError) as err:
        load_facility(str(path))
    assert str(err.value).startswith(f"{path.resolve()}: ") and message in str(err.value)


def test_a_setting_pythia_refuses_names_the_facility_file(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text((HERE / "facilities" / "lep_z.toml").read_text().replace("23:onMode = off", "23:onModes = off"))
    with pytest.raises(ValueError, match=f"{path.resolve()}: PYTHIA refuses the setting '23:onModes = off'"):
        PythiaGenerator(GeneratorConfig(facility=str(path)), 1)
