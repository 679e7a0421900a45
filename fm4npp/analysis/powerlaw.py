"""Scaling-law fits: saturating and pure power laws, compute-optimal frontier, Chinchilla L(N, D).

Pure numpy/scipy; nothing here knows about MLflow. Every fit works on raw (x, loss) arrays and
returns a small dataclass with a `predict` method and optional bootstrap confidence intervals.

- `fit_saturating(x, y)`: L = E + A * x^-alpha by variable projection: for each alpha the model
  is linear in (E, A), solved by non-negative least squares on relative residuals; alpha is
  chosen on a grid and refined by bounded scalar minimisation.
- `fit_pure(x, y)`: L = A * x^-alpha, least squares on log L vs log x.
- `frontier(c, y)`: the compute-optimal envelope (minimum loss reached at or below each compute).
- `fit_chinchilla(n, d, y)`: L = E + A/N^a + B/D^b (Hoffmann et al. approach 3): Huber loss
  (delta=1e-3) on log residuals of a log-sum-exp model, L-BFGS from a grid of starts.
- `bootstrap(...)`: percentile intervals from refits on points resampled with replacement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import minimize, minimize_scalar, nnls
from scipy.special import logsumexp, softmax

ALPHA_BOUNDS = (1e-3, 3.0)  # exponents outside this range are not scaling laws we can resolve


def _as_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    bad = ~(np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"point {i} is not positive and finite: x={x[i]!r}, y={y[i]!r}")
    return x, y


@dataclass
class PowerLawFit:
    """L(x) = E + A * x^-alpha (E = 0 for a pure power law). `ci` maps name -> (lo, hi)."""

    E: float
    A: float
    alpha: float
    kind: str  # "saturating" or "pure"
    n_points: int
    rel_rmse: float  # root-mean-square relative residual of the fit
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def predict(self, x) -> np.ndarray:
        return self.E + self.A * np.asarray(x, dtype=float) ** (-self.alpha)

    def label(self, var: str = "x") -> str:
        """Legend text: the exponent with its bootstrap interval (or "(no interval)" when
        there is none), and the floor E if fitted."""
        text = f"α_{var} = {self.alpha:.3f}"
        if "alpha" in self.ci:
            lo, hi = self.ci["alpha"]
            text += f" [{lo:.3f}, {hi:.3f}]"
        else:  # say so rather than let a bare number pass for a measurement
            text += " (no interval)"
        if self.kind == "pure":
            return f"L ∝ {var}^-α: {text}"
        return f"L = E + A·{var}^-α: {text}, E = {self.E:.3g}"

    def as_dict(self) -> dict:
        out = {"E": self.E, "A": self.A, "alpha": self.alpha, "kind": self.kind,
               "n_points": self.n_points, "rel_rmse": self.rel_rmse}
        for k, (lo, hi) in self.ci.items():
            out[f"{k}_lo"], out[f"{k}_hi"] = lo, hi
        return out


def _projected(alpha: float, u: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Best non-negative (E, A') for one alpha, on relative residuals (weights 1/y)."""
    design = np.stack([np.ones_like(u), u ** (-alpha)], axis=1) / y[:, None]
    coef, rnorm = nnls(design, np.ones_like(y))
    return rnorm**2, coef


def fit_saturating(x, y, alpha_bounds: tuple[float, float] = ALPHA_BOUNDS,
                   n_grid: int = 120) -> PowerLawFit:
    """Fit L = E + A x^-alpha with E, A >= 0 (variable projection over alpha).

    x is rescaled by its geometric mean so A stays O(loss) whatever the units of x (params,
    spacepoints, FLOPs); the returned A is in the original units.
    """
    x, y = _as_xy(x, y)
    if np.unique(x).size < 3:
        raise ValueError(f"a saturating power law needs >= 3 distinct x values, got {np.unique(x).size}")
    x0 = float(np.exp(np.mean(np.log(x))))
    u = x / x0
    lo, hi = alpha_bounds
    grid = np.geomspace(lo, hi, n_grid)
    sse = np.array([_projected(a, u, y)[0] for a in grid])
    i = int(np.argmin(sse))
    left, right = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
    res = minimize_scalar(lambda a: _projected(a, u, y)[0], bounds=(left, right),
                          method="bounded", options={"xatol": 1e-7})
    alpha = float(res.x) if res.fun <= sse[i] else float(grid[i])
    sse_best, (E, A_u) = _projected(alpha, u, y)
    return PowerLawFit(E=float(E), A=float(A_u * x0**alpha), alpha=alpha, kind="saturating",
                       n_points=x.size, rel_rmse=float(np.sqrt(sse_best / x.size)))


def fit_pure(x, y) -> PowerLawFit:
    """Fit L = A x^-alpha by least squares on log L = log A - alpha log x."""
    x, y = _as_xy(x, y)
    if np.unique(x).size < 2:
        raise ValueError("a power law needs >= 2 distinct x values")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    A, alpha = float(np.exp(intercept)), float(-slope)
    rel = (A * x ** (-alpha) - y) / y
    return PowerLawFit(E=0.0, A=A, alpha=alpha, kind="pure", n_points=x.size,
                       rel_rmse=float(np.sqrt(np.mean(rel**2))))


def bootstrap(fit_fn: Callable[..., object], arrays: tuple, n_boot: int = 200, seed: int = 0,
              level: float = 0.9, keys: tuple[str, ...] = ("E", "A", "alpha"),
              min_distinct: int = 3) -> dict[str, tuple[float, float]]:
    """Percentile intervals of fit attributes over refits on resampled points.

    Resamples that have fewer than `min_distinct` distinct first-coordinate values, or whose
    refit fails, are skipped (they cannot identify the parameters).
    """
    rng = np.random.default_rng(seed)
    arrays = tuple(np.asarray(a, dtype=float) for a in arrays)
    n = arrays[0].size
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if np.unique(arrays[0][idx]).size < min_distinct:
            continue
        try:
            fit = fit_fn(*(a[idx] for a in arrays))
        except (ValueError, np.linalg.LinAlgError):
            continue
        for k in keys:
            samples[k].append(float(getattr(fit, k)))
    q = (1 - level) / 2
    return {k: (float(np.quantile(v, q)), float(np.quantile(v, 1 - q)))
            for k, v in samples.items() if len(v) >= 10}


def fit_with_ci(x, y, kind: str = "saturating", n_boot: int = 200, seed: int = 0,
                level: float = 0.9) -> PowerLawFit:
    """`fit_saturating` or `fit_pure` plus bootstrap intervals over resampled points.

    Falls back to a pure power law when there are too few distinct x for three parameters.
    """
    x, y = _as_xy(x, y)
    if kind == "saturating" and np.unique(x).size < 4:
        kind = "pure"
    fn = fit_saturating if kind == "saturating" else fit_pure
    fit = fn(x, y)
    if np.unique(x).size >= 3:
        keys = ("E", "A", "alpha") if kind == "saturating" else ("A", "alpha")
        fit.ci = bootstrap(fn, (x, y), n_boot=n_boot, seed=seed, level=level, keys=keys,
                           min_distinct=3 if kind == "saturating" else 2)
    return fit


def frontier(c, y) -> np.ndarray:
    """Indices of the compute-optimal frontier, in increasing compute.

    A point is on it when no run reached a loss as low with less or equal compute: the running
    minimum of loss over points sorted by compute (ties in compute keep the lowest loss).
    """
    c, y = _as_xy(c, y)
    order = np.lexsort((y, c))  # by compute, then loss
    keep, best = [], np.inf
    for i in order:
        if y[i] < best:
            keep.append(int(i))
            best = y[i]
    return np.asarray(keep, dtype=int)


def fit_frontier(c, y, kind: str = "pure", n_boot: int = 200, seed: int = 0):
    """(frontier indices, power-law fit of loss vs compute on them, or None if < 2 points)."""
    idx = frontier(c, y)
    c, y = np.asarray(c, float)[idx], np.asarray(y, float)[idx]
    if np.unique(c).size < 2:
        return idx, None
    return idx, fit_with_ci(c, y, kind=kind, n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------- Chinchilla L(N, D)

HUBER_DELTA = 1e-3


@dataclass
class ChinchillaFit:
    """L(N, D) = E + A / N^alpha + B / D^beta (N, D in the units given to the fit)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    loss: float  # mean Huber loss on log residuals at the optimum, in units of delta^2
    converged: bool
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def predict(self, n, d) -> np.ndarray:
        n, d = np.asarray(n, float), np.asarray(d, float)
        return self.E + self.A * n ** (-self.alpha) + self.B * d ** (-self.beta)

    @property
    def n_opt_exponent(self) -> float:
        """a in N_opt ∝ C^a under C ∝ N·D: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("E", "A", "B", "alpha", "beta", "loss", "converged")}
        out["n_opt_exponent"] = self.n_opt_exponent
        for k, (lo, hi) in self.ci.items():
            out[f"{k}_lo"], out[f"{k}_hi"] = lo, hi
        return out


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(r)
    val = np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))
    grad = np.clip(r, -delta, delta)
    return val, grad


def _chinchilla_objective(theta, ln_n, ln_d, ln_y, delta):
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)], axis=1)
    lse = logsumexp(terms, axis=1)
    val, g = _huber(lse - ln_y, delta)
    w = softmax(terms, axis=1) * g[:, None]
    grad = np.array([w[:, 0].sum(), w[:, 1].sum(), w[:, 2].sum(),
                     -(w[:, 0] * ln_n).sum(), -(w[:, 1] * ln_d).sum()])
    # scaled by 1/delta^2 so the objective is O(1) near the optimum: L-BFGS-B's ftol test is
    # relative to max(|f|, 1), and an unscaled Huber sum (~1e-6) would never meet it
    scale = 1.0 / (ln_n.size * delta**2)
    return val.sum() * scale, grad * scale


def _chinchilla_starts(ln_n, ln_d, y) -> list[tuple]:
    """Starting points: the variable-projection least-squares optimum (for each (alpha,
    beta) on a grid, E, A, B >= 0 by NNLS on relative residuals) plus a coarse grid."""
    n_, d_ = np.exp(ln_n), np.exp(ln_d)
    best = (np.inf, None)
    for al in np.geomspace(0.05, 2.0, 20):
        for be in np.geomspace(0.05, 2.0, 20):
            design = np.stack([np.ones_like(y), n_**-al, d_**-be], axis=1) / y[:, None]
            coef, rnorm = nnls(design, np.ones_like(y))
            if rnorm < best[0]:
                best = (rnorm, (coef, al, be))
    (e, a, b), al, be = best[1]
    tiny = 1e-6 * float(y.min())  # a zero coefficient has no log; start just above it
    starts = [(np.log(max(a, tiny)), np.log(max(b, tiny)), np.log(max(e, tiny)), al, be)]
    base = float(np.log(np.median(y)))
    starts += [(base - 1.0, base - 1.0, float(np.log(y.min())) - 1.0, al_, be_)
               for al_ in (0.2, 0.6, 1.2) for be_ in (0.2, 0.6, 1.2)]
    return starts


def fit_chinchilla(n, d, y, delta: float = HUBER_DELTA, starts=None) -> ChinchillaFit:
    """Hoffmann et al. approach 3, with N and D rescaled by their geometric means inside.

    Starts: the variable-projection least-squares solution and a 3x3 grid of exponents; the
    best of all L-BFGS runs wins (`converged` says whether that run met its tolerances).
    """
    n, y1 = _as_xy(n, y)
    d, y = _as_xy(d, y)
    if y.size < 5:
        raise ValueError(f"L(N, D) has 5 parameters; got only {y.size} runs")
    n0, d0 = float(np.exp(np.log(n).mean())), float(np.exp(np.log(d).mean()))
    ln_n, ln_d, ln_y = np.log(n / n0), np.log(d / d0), np.log(y)
    if starts is None:
        starts = _chinchilla_starts(ln_n, ln_d, y)
    best = None
    for s in starts:
        res = minimize(_chinchilla_objective, np.asarray(s, float), jac=True,
                       args=(ln_n, ln_d, ln_y, delta), method="L-BFGS-B",
                       bounds=[(None, None)] * 3 + [(0.0, 5.0)] * 2,
                       options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-13})
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    return ChinchillaFit(E=float(np.exp(e)), A=float(np.exp(a) * n0**alpha),
                         B=float(np.exp(b) * d0**beta), alpha=float(alpha), beta=float(beta),
                         loss=float(best.fun), converged=bool(best.success))


def fit_chinchilla_with_ci(n, d, y, n_boot: int = 100, seed: int = 0,
                           level: float = 0.9) -> ChinchillaFit:
    """`fit_chinchilla` plus bootstrap intervals; refits start from the full-data optimum."""
    fit = fit_chinchilla(n, d, y)
    n, d, y = (np.asarray(a, float) for a in (n, d, y))

    def refit(nn, dd, yy):
        # the start must be expressed in the resample's own normalisation
        m0, e0 = float(np.exp(np.log(nn).mean())), float(np.exp(np.log(dd).mean()))
        start = (np.log(fit.A) - fit.alpha * np.log(m0), np.log(fit.B) - fit.beta * np.log(e0),
                 np.log(fit.E), fit.alpha, fit.beta)
        return fit_chinchilla(nn, dd, yy, starts=[start])

    fit.ci = bootstrap(refit, (n, d, y), n_boot=n_boot, seed=seed, level=level,
                       keys=("E", "A", "B", "alpha", "beta"), min_distinct=2)
    return fit
