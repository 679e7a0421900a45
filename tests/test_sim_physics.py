"""Single-particle physics of the TPC simulation (no PYTHIA): layers, loopers, pT, dE/dx."""

from __future__ import annotations

import numpy as np
import pytest

from fm4npp.sim.config import DigitizeConfig, TransportConfig
from fm4npp.sim.geometry import sphenix_tpc
from fm4npp.sim.run import simulate_particles

NOISELESS = TransportConfig(multiple_scattering=False, energy_loss=False, delta_rays=False,
                            decays_in_flight=False, conversions=False)
EXACT = DigitizeConfig(smear=False, adc_threshold=0.0)
PHI = 0.26  # rad: away from a sector boundary (boundaries at multiples of 30 degrees)


def _p3(pt, phi=PHI, pz=0.0, n=1):
    return np.tile([[pt * np.cos(phi), pt * np.sin(phi), pz]], (n, 1))


def test_geometry_contract():
    det = sphenix_tpc()
    assert det.layer_radii.shape == (48,)
    assert np.all(np.diff(det.layer_radii) > 0)
    assert det.module_edges == [[31.105, 40.249], [41.153, 57.475], [58.367, 75.911]]
    assert det.z_half_length == pytest.approx(102.605)
    # layer centres: r_min + (i + 1/2) * pitch
    assert det.layer_radii[0] == pytest.approx(31.105 + 0.5 * (40.249 - 31.105) / 16)


def test_1gev_pion_leaves_48_hits_on_layer_radii():
    det = sphenix_tpc()
    hits, tracks = simulate_particles([211], _p3(1.0), (0, 0, 10.0), transport=NOISELESS, digit=EXACT)
    r = np.hypot(hits["x"], hits["y"])
    assert len(r) == 48
    np.testing.assert_allclose(np.sort(r), det.layer_radii, atol=1e-6)
    np.testing.assert_allclose(hits["z"], 10.0, atol=1e-9)  # eta = 0
    assert np.all(hits["tid"] == 0) and np.all(hits["pdg"] == 211)


def test_full_physics_pion_hits_sit_on_layers():
    det = sphenix_tpc()
    hits, _ = simulate_particles([211], _p3(1.0, pz=0.3), (0, 0, 5.0), rng=np.random.default_rng(1))
    prim = hits["tid"] == 0
    assert 45 <= prim.sum() <= 48  # a cluster may fall below threshold
    r = np.hypot(hits["x"], hits["y"])
    assert np.min(np.abs(r[:, None] - det.layer_radii[None, :]), axis=1).max() < 1e-4


def test_hits_lost_in_sector_gap_and_central_membrane():
    # a stiff track along a sector boundary (phi = 0) stays in the gap: no hit at all
    hits, _ = simulate_particles([211], _p3(100.0, phi=0.0), (0, 0, 10.0), transport=NOISELESS, digit=EXACT)
    assert len(hits["x"]) == 0
    # in the central-membrane plane (z = 0, eta = 0) no hit survives
    hits, _ = simulate_particles([211], _p3(1.0), (0, 0, 0.0), transport=NOISELESS, digit=EXACT)
    assert len(hits["x"]) == 0


def test_50mev_electron_never_reaches_31cm():
    rng = np.random.default_rng(2)
    n = 200
    phi = rng.uniform(0, 2 * np.pi, n)
    cth = rng.uniform(-0.5, 0.5, n)
    p = 0.05
    p3 = np.stack([p * np.sqrt(1 - cth**2) * np.cos(phi), p * np.sqrt(1 - cth**2) * np.sin(phi), p * cth], 1)
    hits, tracks = simulate_particles(np.full(n, 11), p3, (0, 0, 3.0), rng=rng)
    assert len(hits["x"]) == 0


def test_circle_fit_returns_pt_within_1_percent():
    for pt in (0.3, 1.0, 3.0):
        hits, _ = simulate_particles([-211], _p3(pt, pz=0.2), (0, 0, 4.0), transport=NOISELESS, digit=EXACT)
        x, y = hits["x"], hits["y"]
        # algebraic (Kasa) circle fit: x^2 + y^2 + D x + E y + F = 0
        A = np.stack([x, y, np.ones_like(x)], 1)
        D, E, F = np.linalg.lstsq(A, -(x * x + y * y), rcond=None)[0]
        R = np.sqrt(D * D / 4 + E * E / 4 - F)
        pt_fit = 0.299792458e-2 * 1.4 * R
        assert pt_fit == pytest.approx(pt, rel=0.01)


def test_looper_crosses_layers_many_times():
    hits, _ = simulate_particles([211], _p3(0.12, pz=0.01), (0, 0, 5.0), transport=NOISELESS, digit=EXACT)
    # 2R = 57 cm: the track curls inside the TPC, crossing each reached layer twice per turn
    assert len(hits["x"]) > 48
    assert np.hypot(hits["x"], hits["y"]).max() < 58.0
    assert np.bincount(hits["layer"]).max() >= 4


def test_truncated_mean_dedx_separates_species():
    rng = np.random.default_rng(3)

    def trunc_mean(pdg, p):
        hits, _ = simulate_particles(np.full(20, pdg), _p3(p, phi=rng.uniform(0.1, 0.4), pz=0.05, n=20), (0, 0, 5.0),
                                     rng=rng)
        out = []
        for t in range(20):
            e = np.sort(hits["energy"][hits["tid"] == t])
            if len(e) >= 20:
                out.append(e[: int(0.7 * len(e))].mean())
        return np.array(out)

    pi, k, prot, el = (trunc_mean(211, 0.45), trunc_mean(321, 0.45), trunc_mean(2212, 0.45), trunc_mean(11, 0.45))
    assert len(pi) > 10 and len(prot) > 10
    # resolution of a 70 % truncated mean: ~10 % or better
    assert pi.std() / pi.mean() < 0.15
    # at 0.45 GeV/c: protons >> kaons > electrons > pions (Fermi plateau of electrons)
    assert prot.mean() > 1.5 * k.mean() > 1.5 * pi.mean()
    assert el.mean() > 1.15 * pi.mean()


def test_decay_in_flight_and_conversion_secondaries():
    rng = np.random.default_rng(4)
    # slow kaons decay within the TPC radius often (c tau = 3.7 m, beta gamma ~ 0.6)
    _, tracks = simulate_particles(np.full(200, 321), _p3(0.3, n=200), (0, 0, 5.0), rng=rng)
    kids = tracks["parent"] >= 0
    assert np.any(np.abs(tracks["pdg"][kids]) == 13)  # K -> mu nu
    # photons convert in the beam pipe / field cage (~2 % X0 in total)
    _, tracks = simulate_particles(np.full(2000, 22), _p3(1.0, pz=0.1, n=2000), (0, 0, 5.0), rng=rng)
    pairs = np.sum(np.abs(tracks["pdg"]) == 11) / 2
    assert 10 < pairs < 100  # P = 1 - exp(-7/9 * x/X0) with x/X0 ~ 2.5 %


def test_charge_of_a_crossing_never_exceeds_the_particles_kinetic_energy():
    """Bethe at beta ~ 0.02 (an evaporation proton) asks for more charge than the proton has:
    it stops in the sensor and deposits its kinetic energy; a MIP's charge is Bethe's."""
    from fm4npp.sim.digitize import deposit
    from fm4npp.sim.geometry import get_detector

    si, cfg, rng = get_detector("sphenix").material("Si"), DigitizeConfig(), np.random.default_rng(0)
    t_cut = TransportConfig().delta_t_min_solid_gev
    mp, n = 0.938272, 200
    ekin = np.full(n, 2e-4)  # 0.2 MeV protons across 320 um of silicon: they stop in it
    bg = np.sqrt(ekin * (ekin + 2 * mp)) / mp
    e = deposit(np.full(n, 0.032), bg, np.full(n, mp), np.ones(n), np.zeros(n, bool), si, t_cut, cfg, rng,
                ekin=ekin)
    assert np.all(e == ekin)  # each stops in the sensor
    uncapped = deposit(np.full(n, 0.032), bg, np.full(n, mp), np.ones(n), np.zeros(n, bool), si, t_cut, cfg, rng)
    assert np.median(uncapped) > 10 * ekin[0]  # what the cap prevents
    # a 1 GeV/c pion: ~ 100 keV of charge in 320 um, untouched by the cap
    mpi = 0.13957
    pion = deposit(np.full(n, 0.032), np.full(n, 1.0 / mpi), np.full(n, mpi), np.ones(n), np.zeros(n, bool), si,
                   t_cut, cfg, rng, ekin=np.full(n, np.hypot(1.0, mpi) - mpi))
    assert 60e-6 < np.median(pion) < 140e-6
