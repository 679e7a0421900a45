"""Log-scale axes that always label at least three ticks, in one number style per axis.

matplotlib labels only powers of ten on a log axis, so a loss axis spanning less than a decade
(the usual case in a scaling plot) shows no numbers at all; these pick readable ticks instead.
"""

from __future__ import annotations

import math

import numpy as np


def _plain(v: float) -> str:
    """3 significant digits, never in e-notation: 5000, 2.5, 0.061."""
    return np.format_float_positional(float(f"{v:.3g}"), trim="-")


def _sci(v: float) -> str:
    """10^k, or m x 10^k."""
    exp = math.floor(math.log10(v) + 1e-9)
    mant = float(f"{v / 10**exp:.3g}")
    if abs(mant - 1) < 1e-6:
        return f"$10^{{{exp}}}$"
    return f"${_plain(mant)}\\times10^{{{exp}}}$"


def tick_labels(ticks) -> list[str]:
    """One style per axis: plain numbers when every tick is in [1e-3, 1e4), else m x 10^k."""
    ticks = [float(t) for t in ticks if t > 0]
    plain = all(1e-3 <= t < 1e4 for t in ticks)
    return [_plain(t) if plain else _sci(t) for t in ticks]


def _ticks_inside(lo: float, hi: float, subs) -> list[float]:
    e0, e1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    return [m * 10.0**e for e in range(e0, e1 + 1) for m in subs
            if lo * (1 - 1e-9) <= m * 10.0**e <= hi * (1 + 1e-9)]


def _min_gap(ticks: list[float], lo: float, hi: float) -> float:
    """The closest two ticks, as a fraction of the (log) axis length."""
    t = np.log(np.sort(ticks))
    return float(np.diff(t).min() / np.log(hi / lo)) if len(t) > 1 else 1.0


def readable_log_axis(axis, lo: float, hi: float) -> list[float]:
    """Label at least 3 ticks on a log axis spanning (lo, hi) and return their positions.

    With 3 or more powers of ten inside: matplotlib's 10^k labels, unchanged. Otherwise (a
    loss axis, usually, spans less than a decade and matplotlib would label nothing) the first
    of these that puts 3 ticks inside, spaced so their labels do not collide: the mantissas
    1, 3 or 1, 2, 5 of each decade, then round linear steps (0.05, 0.06, 0.07; 1, 1.5, 2).
    Labels are plain numbers (3 significant digits) or, beyond [1e-3, 1e4), m x 10^k. Minor
    ticks stay at 1..9 x 10^k, unlabelled (grid lines)."""
    from matplotlib.ticker import (FixedFormatter, FixedLocator, LogLocator, MaxNLocator,
                                   NullFormatter)

    lo, hi = min(lo, hi), max(lo, hi)
    axis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
    if len(_ticks_inside(lo, hi, (1.0,))) >= 3:
        return _ticks_inside(lo, hi, (1.0,))
    horizontal = getattr(axis, "axis_name", "y") == "x"
    candidates = [_ticks_inside(lo, hi, subs) for subs in ((1.0, 3.0), (1.0, 2.0, 5.0))]
    # y labels stack (more ticks fit); x labels sit side by side (fewer, wider apart)
    for nbins in ((3, 4, 5) if horizontal else (5, 4, 6, 3, 8)):
        values = MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        candidates.append([float(v) for v in values
                           if v > 0 and lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)])
    candidates = [c for c in candidates if len(c) >= 3] or [max(candidates, key=len)]

    def room(ticks):  # the gap a tick's label needs, as a fraction of the axis
        if not horizontal:
            return 0.06
        return 0.12 if tick_labels(ticks)[0][0] != "$" else 0.17

    fits = [c for c in candidates if _min_gap(c, lo, hi) >= room(c)]
    ticks = fits[0] if fits else max(candidates, key=lambda c: _min_gap(c, lo, hi))
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FixedFormatter(tick_labels(ticks)))
    axis.set_minor_locator(LogLocator(base=10.0, subs="all", numticks=100))
    return ticks
