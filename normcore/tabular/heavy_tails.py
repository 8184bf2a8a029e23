"""Heavy tails for the quantile map: a generalised Pareto tail where a measure's tail is heavier than normal.

The quantile map (:class:`~normcore.tabular.gaussianisation.IDPTransformer`) extrapolates beyond its anchors at the
outer 5% of the training values along a line: a normal tail in the measure's own (residual) units. For a measure
whose conditional tail is much heavier than normal (Student-t-like), that line reads far values many times too far
out, and the scoring's tail model inherits it.

So each side of each measure is tested: the tail shape xi of a generalised Pareto distribution (GPD) is estimated
by probability-weighted moments (Hosking and Wallis 1987) from the excesses beyond the outer 5% **within each of
2-4 age bins** (:func:`age_bins`: equal numbers of rows by age rank, as many as give each bin about
``EXCESSES_PER_BIN`` excesses, at most ``AGE_BINS``) and averaged, and compared with the same statistic for normal
tails with the same numbers of excesses. Within bins, because a measure whose shape changes with age (a mixture
whose weight moves, a skew that changes sign) has a heavy-looking tail when all ages are pooled though each age's
tail is light (BENCHMARKS.md, forty-fourth session); a side is heavy when the average exceeds both 0 and the
normal tails' 99th percentile. A heavy side's map beyond its anchor follows the GPD fitted to all of that side's
excesses:

    P(X > anchor + e) = p_anchor * (1 + xi e / sigma) ** (-1 / xi),   z = Phi^-1 of that tail probability,

continuous with the map at the anchor, and its inverse for sampling. Other sides keep the line. Tables with fewer
than ``MIN_EXCESSES_PER_BIN`` excesses in some age bin (under 400 rows in two bins) are not tested: their line
stays. Bins by rank rather than at age quantiles: ages that cluster on a few values (integer years, a student
sample) would otherwise leave a bin too small to test, and the whole table untested.

The normal tails' statistic: with m excesses its mean is about -0.14 - 1.2 / m (the GPD shape a normal tail shows
at the 5% threshold; it reaches 0 only far out) and its standard deviation about (1.2 + 2.5 / m) / sqrt(m), both
measured by simulation for m = 10-2500 (``tests/tabular/test_heavy_tails.py`` checks the false-flag rate).
"""

from __future__ import annotations

import numpy as np
from scipy import special

AGE_BINS = 4
"""Most age bins within which the tail shape is estimated (tables of 2000 rows or more)."""
EXCESSES_PER_BIN = 25
"""Excesses per bin that :func:`age_bins` aims at: fewer bins for smaller tables (2 below 1500 rows, 3 below 2000),
trading some protection against a shape that moves with age for the power to see a heavy tail at all."""
TAIL_SHARE = 0.05
"""Share of each bin's values taken as its excesses (the quantile map's anchors sit at the outer 5% too)."""
MIN_EXCESSES_PER_BIN = 10
"""Fewer excesses than this in any age bin and a side is not tested (the shape estimate would be mostly noise)."""
ONE_SIDED_99 = 2.326
"""A side is heavy when its average shape exceeds the normal tails' mean by this many standard deviations (1%)."""
MAX_SHAPE = 0.5
"""Largest tail shape used (a Student-t with 2 degrees of freedom); the estimator is unreliable beyond it."""


def pwm_gpd(excesses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape xi and scale sigma of a GPD fitted by probability-weighted moments to sorted (ascending) excesses,
    along the last axis (``(..., m)``)."""
    m = excesses.shape[-1]
    a0 = excesses.mean(axis=-1)
    a1 = (excesses * (1 - (np.arange(1, m + 1) - 0.35) / m)).mean(axis=-1)
    denom = a0 - 2 * a1
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 - a0 / denom, 2 * a0 * a1 / denom


def normal_tail_shape(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of :func:`pwm_gpd`'s shape for a normal sample's top ``m`` excesses beyond its
    (m + 1)-th largest value, at the 5% threshold (see the module docstring)."""
    m = np.asarray(m, float)
    return -0.14 - 1.2 / m, (1.2 + 2.5 / m) / np.sqrt(m)


def n_age_bins(n_rows: int) -> int:
    """Age bins for a table of ``n_rows``: about ``EXCESSES_PER_BIN`` excesses each, between 2 and ``AGE_BINS``."""
    return int(np.clip(int(n_rows * TAIL_SHARE) // EXCESSES_PER_BIN, 2, AGE_BINS))


def age_bins(ages: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Bin index (0..n_bins-1) of each age: equal numbers of rows by age rank (rows of one age may fall in two
    neighbouring bins; ties keep the table's order). ``n_bins``: :func:`n_age_bins` of the row count by default."""
    ages = np.asarray(ages, float)
    n_bins = n_age_bins(ages.size) if n_bins is None else n_bins
    bins = np.empty(ages.size, int)
    bins[np.argsort(ages, kind="stable")] = np.arange(ages.size) * n_bins // max(ages.size, 1)
    return bins


def heavy_sides(values: np.ndarray, bins: np.ndarray) -> tuple[bool, bool]:
    """Are the lower and the upper tail of ``values`` significantly heavier than normal within the age ``bins``?

    Both False when a bin has fewer than ``MIN_EXCESSES_PER_BIN`` excesses (too few to tell). One sort per bin
    serves both sides."""
    shapes, counts = [], []
    for b in np.unique(bins):
        v = np.sort(values[bins == b])
        m = int(round(TAIL_SHARE * v.size))
        if m < MIN_EXCESSES_PER_BIN:
            return False, False
        lower = v[m] - v[m - 1::-1]  # the m lowest values' distances below the (m + 1)-th lowest, ascending
        upper = v[v.size - m:] - v[v.size - 1 - m]
        shapes.append([float(pwm_gpd(lower)[0]), float(pwm_gpd(upper)[0])])
        counts.append(m)
    if len(shapes) < 2:
        return False, False
    mean, sd = normal_tail_shape(np.array(counts))
    threshold = max(0.0, mean.mean() + ONE_SIDED_99 * np.sqrt((sd**2).sum()) / len(sd))
    low, high = np.mean(shapes, axis=0)
    return bool(low > threshold), bool(high > threshold)


def heavier_than_normal(values: np.ndarray, bins: np.ndarray, upper: bool) -> bool:
    """:func:`heavy_sides` for one side."""
    return heavy_sides(values, bins)[int(upper)]


def fit_heavy_tails(values: np.ndarray, bins: np.ndarray, anchors: tuple[float, float],
                    anchor_scores: tuple[float, float]) -> list[list[float] | None]:
    """Per side (lower, upper): ``[xi, sigma, log tail probability at the anchor]`` of the GPD the map follows
    beyond that anchor, or None where the side is not heavier than normal (the line stays).

    ``values``: the training values (no NaN); ``bins``: their age bins; ``anchors`` and ``anchor_scores``: the map's
    outermost knots and their normal scores."""
    out: list[list[float] | None] = []
    for heavy, upper, anchor, score in zip(heavy_sides(values, bins), (False, True), anchors, anchor_scores,
                                           strict=True):
        tail = None
        if heavy:
            excesses = np.sort(values[values > anchor] - anchor if upper else anchor - values[values < anchor])
            if excesses.size >= MIN_EXCESSES_PER_BIN:
                xi, sigma = (float(v) for v in pwm_gpd(excesses))
                if xi > 0 and sigma > 0 and np.isfinite(xi) and np.isfinite(sigma):
                    tail = [min(xi, MAX_SHAPE), sigma, float(special.log_ndtr(-abs(score)))]
        out.append(tail)
    return out


def tail_scores(excess: np.ndarray, tail: list[float]) -> np.ndarray:
    """|z| of values ``excess`` (>= 0) beyond an anchor whose side follows ``tail`` (:func:`fit_heavy_tails`)."""
    xi, sigma, log_p = tail
    return -special.ndtri_exp(log_p - np.log1p(xi * excess / sigma) / xi)


def tail_excess(score: np.ndarray, tail: list[float]) -> np.ndarray:
    """The inverse of :func:`tail_scores`: the excess beyond the anchor of normal scores |z| ``score``."""
    xi, sigma, log_p = tail
    return sigma / xi * np.expm1(-xi * (special.log_ndtr(-score) - log_p))
