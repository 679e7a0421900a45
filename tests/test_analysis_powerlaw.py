"""Scaling-law fits recover known laws from noisy synthetic data (fixed seeds, fast)."""

import numpy as np
import pytest

from fm4npp.analysis.powerlaw import (
    fit_chinchilla,
    fit_chinchilla_with_ci,
    fit_frontier,
    fit_pure,
    fit_saturating,
    fit_with_ci,
    frontier,
)


@pytest.mark.parametrize("alpha", [0.15, 0.35, 0.9])
def test_saturating_recovers_exponent(alpha):
    rng = np.random.default_rng(1)
    x = np.geomspace(3e5, 2e8, 24)  # parameter counts, like m1..m6
    y = (0.2 + 1.0 * (x / 1e6) ** -alpha) * np.exp(rng.normal(0, 0.005, x.size))
    fit = fit_saturating(x, y)
    assert fit.alpha == pytest.approx(alpha, rel=0.05)
    assert fit.E == pytest.approx(0.2, rel=0.25)  # the floor is the least constrained
    assert fit.rel_rmse < 0.01


def test_saturating_with_large_floor():
    rng = np.random.default_rng(2)
    x = np.geomspace(1e15, 1e19, 30)  # FLOPs: the x rescaling must keep A well conditioned
    y = (0.5 + 2e5 * x**-0.3) * np.exp(rng.normal(0, 0.005, x.size))
    fit = fit_saturating(x, y)
    assert fit.alpha == pytest.approx(0.3, rel=0.05)
    assert fit.E == pytest.approx(0.5, rel=0.05)
    assert np.allclose(fit.predict(x), y, rtol=0.03)


def test_pure_recovers_exponent_and_bootstrap_covers_truth():
    rng = np.random.default_rng(3)
    x = np.geomspace(1e6, 1e10, 15)
    y = 30.0 * x**-0.25 * np.exp(rng.normal(0, 0.02, x.size))
    assert fit_pure(x, y).alpha == pytest.approx(0.25, rel=0.05)
    fit = fit_with_ci(x, y, kind="pure", n_boot=200, seed=0, level=0.95)
    lo, hi = fit.ci["alpha"]
    assert lo < 0.25 < hi
    assert hi - lo < 0.05


def test_saturating_bootstrap_ci_covers_truth():
    rng = np.random.default_rng(4)
    x = np.geomspace(3e5, 2e8, 12)
    y = (0.02 + 3.0 * (x / 1e6) ** -0.4) * np.exp(rng.normal(0, 0.01, x.size))
    fit = fit_with_ci(x, y, n_boot=150, seed=0, level=0.95)
    lo, hi = fit.ci["alpha"]
    assert lo <= 0.4 <= hi
    assert lo <= fit.alpha <= hi
    assert "α" in fit.label("N") and "[" in fit.label("N")


def test_too_few_points_falls_back_to_pure():
    fit = fit_with_ci([1e5, 1e6, 1e7], [1.0, 0.5, 0.25], n_boot=20)
    assert fit.kind == "pure"
    assert fit.alpha == pytest.approx(np.log10(2), rel=1e-6)


def test_bad_input_names_the_point():
    with pytest.raises(ValueError, match="point 1"):
        fit_pure([1.0, -2.0, 3.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="distinct"):
        fit_saturating([1.0, 1.0, 2.0], [1.0, 1.0, 0.5])


def _dominated(c, y, i):
    """Another run reached a loss at least as low with at most the compute of run i."""
    return any(j != i and c[j] <= c[i] and y[j] <= y[i] for j in range(len(c)))


def test_frontier_on_hand_data():
    # runs: (compute, loss); a bigger model is worse at small compute, better at large. At
    # C = 2 the better run comes second (ties in compute must be broken by loss, not by input
    # order) and at C = 16 a run only equals the best loss so far (not better: off the frontier)
    c = [1, 2, 2, 4, 4, 8, 8, 16, 16]
    y = [0.9, 0.8, 0.7, 0.6, 0.65, 0.62, 0.4, 0.45, 0.4]
    idx = frontier(c, y)
    assert idx.tolist() == [0, 2, 3, 6]
    assert idx.tolist() == [i for i in np.argsort(c, kind="stable") if not _dominated(c, y, i)]
    # the fit is on the frontier's points only: its exponent is their log-log slope, which the
    # slope through all the runs is not
    idx2, fit = fit_frontier(c, y, n_boot=20)
    lc, ly = np.log(np.asarray(c, float)), np.log(np.asarray(y, float))
    on_frontier = -np.polyfit(lc[idx], ly[idx], 1)[0]
    assert idx2.tolist() == idx.tolist() and fit.kind == "pure" and fit.n_points == idx.size
    assert fit.alpha == pytest.approx(on_frontier, rel=1e-9)
    assert abs(-np.polyfit(lc, ly, 1)[0] - on_frontier) > 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frontier_is_exactly_the_undominated_runs(seed):
    # the definition checked both ways against brute force, on data with many compute ties:
    # every undominated run is on the frontier and every run on it is undominated, in
    # increasing compute with strictly falling loss
    rng = np.random.default_rng(seed)
    c = rng.integers(1, 15, 60).astype(float)
    y = rng.uniform(0.1, 1.0, 60)
    idx = frontier(c, y)
    assert sorted(idx.tolist()) == [i for i in range(c.size) if not _dominated(c, y, i)]
    assert np.all(np.diff(c[idx]) > 0) and np.all(np.diff(y[idx]) < 0)
    assert 2 <= idx.size < c.size


def test_frontier_recovers_envelope_exponent():
    # three model sizes, each a learning curve L = E_N + A C^-a; the envelope falls like a power law
    rng = np.random.default_rng(5)
    cs, ys, clean, size = [], [], [], []
    for k, floor in enumerate((0.4, 0.2, 0.1)):
        c = np.geomspace(1e12, 1e16, 20) * (0.2 / floor) ** 2
        cs.append(c)
        clean.append(floor + 1e3 * c**-0.25)
        ys.append(clean[-1] * np.exp(rng.normal(0, 0.002, c.size)))
        size.append(np.full(c.size, k))
    c, y, clean, size = (np.concatenate(a) for a in (cs, ys, clean, size))
    idx = frontier(c, y)
    # exactly the runs that no run with less or equal compute beats (brute force), by compute
    brute = [i for i in np.argsort(c) if all(y[i] < y[j] for j in range(c.size) if j != i and c[j] <= c[i])]
    assert idx.tolist() == brute
    # 0.2% noise does not change which runs are compute-optimal here, and the envelope switches
    # from the smallest model to the largest as compute grows
    assert idx.tolist() == frontier(c, clean).tolist()
    assert set(size[idx]) == {0, 1, 2} and np.all(np.diff(size[idx]) >= 0)
    # the fitted exponent is the log-log slope of the noiseless envelope (0.198) within 2%
    idx2, fit = fit_frontier(c, y, n_boot=50)
    truth = -np.polyfit(np.log(c[idx]), np.log(clean[idx]), 1)[0]
    assert truth == pytest.approx(0.198, abs=0.001)
    assert idx2.tolist() == idx.tolist() and fit.kind == "pure"
    assert fit.alpha == pytest.approx(truth, rel=0.02)
    lo, hi = fit.ci["alpha"]
    assert lo <= truth <= hi


def test_chinchilla_recovers_parameters():
    rng = np.random.default_rng(6)
    n = np.repeat(np.geomspace(3e5, 2e8, 6), 5)
    d = np.tile(np.geomspace(1e7, 1e10, 5), 6)
    y = (0.5 + 300 * n**-0.4 + 2000 * d**-0.3) * np.exp(rng.normal(0, 0.003, n.size))
    fit = fit_chinchilla(n, d, y)
    assert fit.converged
    assert fit.alpha == pytest.approx(0.4, rel=0.05)
    assert fit.beta == pytest.approx(0.3, rel=0.05)
    assert fit.E == pytest.approx(0.5, rel=0.1)
    assert fit.n_opt_exponent == pytest.approx(0.3 / 0.7, rel=0.05)


def test_chinchilla_bootstrap_covers_truth():
    rng = np.random.default_rng(7)
    n = np.repeat(np.geomspace(3e5, 2e8, 5), 4)
    d = np.tile(np.geomspace(1e7, 1e10, 4), 5)
    y = (0.5 + 300 * n**-0.4 + 2000 * d**-0.3) * np.exp(rng.normal(0, 0.005, n.size))
    fit = fit_chinchilla_with_ci(n, d, y, n_boot=25, seed=0, level=0.95)
    lo, hi = fit.ci["alpha"]
    assert lo <= 0.4 <= hi
    lo, hi = fit.ci["beta"]
    assert lo <= 0.3 <= hi


def test_label_shows_the_exponent_interval_or_says_there_is_none():
    x = np.geomspace(1e3, 1e6, 8)
    y = 5.0 * x**-0.3 * np.exp(np.random.default_rng(8).normal(0, 0.01, x.size))
    fit = fit_with_ci(x, y, kind="pure", n_boot=50)
    lo, hi = fit.ci["alpha"]
    assert f"α_N = {fit.alpha:.3f} [{lo:.3f}, {hi:.3f}]" in fit.label("N")
    bare = fit_pure(x, y)  # no bootstrap
    assert "(no interval)" in bare.label("N") and "[" not in bare.label("N")
