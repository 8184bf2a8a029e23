"""Point masses at a measure's floor or ceiling: a value many reference subjects share exactly.

Some FreeSurfer measures are exactly 0 for most brains (``5th-Ventricle`` in 99% of fcon1000's subjects,
``non-WM-hypointensities`` in 96%, ``Left-vessel`` in 3%): a structure that is absent, or a count that did not
occur. The diffusion model draws continuous values, so without care its samples spread around that value on both
sides (negative volumes included), and a healthy subject's 0 is ranked among them: on the fcon1000 reference's
held-out subjects a healthy 0 read z -21.6 (BENCHMARKS.md, forty-fifth session).

A measure has a **floor** when its smallest training value is shared by at least ``MIN_SHARE`` of the observed
training values and at least ``MIN_COUNT`` rows (with ``MIN_BODY`` values between the bounds), and a **ceiling**
likewise at its largest. The diffusion model treats such a measure as censored there, as a Tobit model does:

- the location-scale stage and the quantile map are fitted to the values between the bounds (the body; with
  fewer than ``MIN_BODY_FOR_COVARIATES`` of them, one location and scale for every row, :func:`pooled_bodies`);
- the map places the body's normal scores between the bounds' shares of the latent scale (:func:`body_to_latent`),
  and a value at the floor sits at the top of the floor's share (:func:`latent_bounds`);
- in training each value at the floor gets a latent drawn below that (:func:`spread_beyond_bounds`), so the
  network learns how likely the floor is at each age and level, as a smooth density;
- a draw in the floor's share, or beyond the floor in IDP units, is the floor itself (:func:`clip_to_bounds`):
  samples, centile curves and synthetic subjects never cross it;
- a value at the floor ties with every draw in the floor's share: its randomised centile is uniform between 0 and
  the model's probability of the floor at its covariates (the randomised quantile residual of Dunn and Smyth
  1996, which GAMLSS uses for its zero-adjusted families), and no tail model scores it.

So the centiles stay calibrated and a 0 never reads above the floor's share; but for a measure most of the
reference has at 0, a 0 says nothing of the person, and its z lies beyond +-1.96 as often as chance. The same holds
at a ceiling. A value beyond a bound, which no reference subject had, is scored as the bound.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

MIN_SHARE = 0.01
"""Share of a measure's observed training values that must equal its extreme for the extreme to be a point mass."""
MIN_COUNT = 5
"""Training rows that must share the extreme value (a few ties at the minimum are rounding, not a point mass)."""
MIN_BODY = 1
"""Training values a measure needs strictly between its bounds for them to count: one. A measure of two values, 0
and 1, has no body and keeps the continuous treatment. A measure present in a handful of the reference (1 of 900)
is read against its floor's share, not extrapolated from a continuous fit to its zeros (a present value read z 12-350
that way); a body without spread of its own takes :func:`assumed_spread` (BENCHMARKS.md, forty-sixth to
forty-eighth sessions)."""
SHARED_BY_MOST = 0.5
"""A value at a point mass that at least this share of the reference has (0 for a structure most brains lack) tells
nothing of the person: reports and the dashboard name it, they do not rank or colour it as a deviation."""
MIN_BODY_FOR_COVARIATES = 100
"""Values between the bounds below which a measure's body gets one location and scale for all rows instead of the
location-scale stage's age curves and site effects (fitted to 10 values, as fcon1000's ``5th-Ventricle`` has, they
put a present 5th ventricle at z 25-108)."""


def at_shared_masses(values: np.ndarray | pd.DataFrame, idps: list[str], masses: list[tuple[str, str, float, float]],
                     min_share: float = SHARED_BY_MOST) -> np.ndarray:
    """(n, D) mask of the ``values`` (an array with columns ``idps``, NaN: missing; or a table holding them, such as
    a score table, where absent or non-numeric values count as missing) that sit at a point mass of ``masses`` (a
    model's ``point_masses_``: IDP, kind, value, training share) that at least ``min_share`` of the reference
    shares: their z is a random draw within that share and tells nothing of the person."""
    if isinstance(values, pd.DataFrame):
        values = values.reindex(columns=idps).apply(pd.to_numeric, errors="coerce")
    values = np.asarray(values, float)
    mask = np.zeros(values.shape, bool)
    column = {name: j for j, name in enumerate(idps)}
    for idp, _, value, share in masses:
        if share >= min_share and idp in column:
            mask[:, column[idp]] |= values[:, column[idp]] == value
    return mask


def beyond_bounds_notes(idps: list[str], y: np.ndarray, floor: np.ndarray, ceiling: np.ndarray) -> list[str]:
    """One note per IDP with scored values ``y`` (n, D; NaN: missing) below its floor or above its ceiling, which no
    training value was: they are scored as the bound (:func:`at_bounds`), so a code such as -1 for "not measured"
    would read as a healthy 0; the note says how many and asks to check them."""
    y = np.asarray(y, float)
    notes = []
    with np.errstate(invalid="ignore"):  # NaN values and bounds compare False
        below, above = y < floor, y > ceiling
    for j in np.flatnonzero(below.any(axis=0) | above.any(axis=0)):
        for mask, side, training_side, bound in ((below, "below its floor", "above", floor),
                                                 (above, "above its ceiling", "below", ceiling)):
            if mask[:, j].any():
                notes.append(f"IDP {idps[j]!r}: {int(mask[:, j].sum())} value(s) {side} {bound[j]:g}, where every "
                             f"training value was at or {training_side} it: scored as that value; check them (a code "
                             "for a missing value?)")
    return notes


def _extremes(col: np.ndarray) -> tuple[float, float, bool, bool, int]:
    """Of a column's observed values: its smallest and largest, whether each is shared as a point mass needs (by
    ``MIN_SHARE`` of them and ``MIN_COUNT`` rows), and how many values lie between those that are."""
    need = max(MIN_COUNT, MIN_SHARE * col.size)
    lo, hi = col.min(), col.max()
    n_lo, n_hi = (col == lo).sum(), (col == hi).sum()
    has_lo, has_hi = bool(n_lo >= need), bool(n_hi >= need)
    return float(lo), float(hi), has_lo, has_hi, int(col.size - has_lo * n_lo - has_hi * n_hi)


def find_bounds(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``y`` (n, D; NaN = missing): its floor and ceiling (NaN where the column has none)."""
    y = np.asarray(y, float)
    floor, ceiling = np.full(y.shape[1], np.nan), np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        col = y[~np.isnan(y[:, j]), j]
        if col.size == 0:
            continue
        lo, hi, has_lo, has_hi, n_body = _extremes(col)
        if lo < hi and n_body >= MIN_BODY:
            floor[j] = lo if has_lo else np.nan
            ceiling[j] = hi if has_hi else np.nan
    return floor, ceiling


def assumed_spread(centre: float, floor: float, ceiling: float) -> float:
    """The spread of a body whose values do not give one (a single value, or several equal ones): the body's
    distance from its nearer bound, a coefficient of variation of 1 about it. It is a stated assumption, not an
    estimate; in units of the measure, so it does not depend on them. (The bodies of fcon1000's four bounded
    measures have 0.65-2.15, BENCHMARKS.md.)"""
    return float(np.nanmin(np.abs(centre - np.array([floor, ceiling], float))))


def bodies_without_spread(y: np.ndarray, names: list[str]) -> list[str]:
    """Warnings for the columns of ``y`` with a point mass whose values between the bounds have no spread of their
    own (one value, or several equal ones): :func:`pooled_bodies` gives them :func:`assumed_spread`, so a value off
    the bound is read against the bound's share and an assumed spread, and how far out it reads rests on that."""
    y = np.asarray(y, float)
    floor, ceiling = find_bounds(y)
    out = []
    for j in np.flatnonzero(~np.isnan(floor) | ~np.isnan(ceiling)):
        col = y[~np.isnan(y[:, j]), j]
        at = (col == floor[j]) | (col == ceiling[j])
        body = col[~at]
        if np.ptp(body) > 0:
            continue
        shared = [f"{(col == v).mean():.1%} of the training values are {v:g}" for v in (floor[j], ceiling[j])
                  if not np.isnan(v)]
        spread = assumed_spread(float(body[0]), floor[j], ceiling[j])
        others = f"the only other value is {body[0]:g}" if body.size == 1 else \
            f"the {body.size} other values are all {body[0]:g}"
        out.append(f"{names[j]}: {' and '.join(shared)} and {others}, which gives no spread: a spread of {spread:g} "
                   "(the distance to the bound) is assumed, so a value off the bound reads beyond the bound's share, "
                   "but how far beyond rests on that assumption")
    return out


def pooled_bodies(y_body: np.ndarray, floor: np.ndarray, ceiling: np.ndarray) -> dict[int, tuple[float, float]]:
    """``{column: (mean, SD)}`` of the bounded columns whose values between the bounds (``y_body``: NaN elsewhere)
    are fewer than ``MIN_BODY_FOR_COVARIATES``: too few for an age curve and a shift and scale per site (a
    measure present in 1% of the reference), so one location and scale serves every row; so does a body without
    spread (one value, or equal ones: the middle level of a measure of three values), with :func:`assumed_spread`."""
    out = {}
    for j in np.flatnonzero(~np.isnan(floor) | ~np.isnan(ceiling)):
        body = y_body[~np.isnan(y_body[:, j]), j]
        if body.size < MIN_BODY_FOR_COVARIATES or np.ptp(body) == 0:
            centre = float(body.mean())
            out[int(j)] = (centre, float(body.std()) or assumed_spread(centre, floor[j], ceiling[j]))
    return out


def bound_shares(y: np.ndarray, floor: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """(D, 2): each column's share of observed values at its floor and at its ceiling (0 where it has none)."""
    at_floor, at_ceiling = at_bounds(y, floor, ceiling)
    observed = np.maximum((~np.isnan(np.asarray(y, float))).sum(axis=0), 1)
    return np.column_stack([at_floor.sum(axis=0) / observed, at_ceiling.sum(axis=0) / observed])


def body_to_latent(z: np.ndarray, p_floor: float, p_ceiling: float) -> np.ndarray:
    """Normal scores ``z`` of a measure's body (the values between its floor and ceiling) -> the latent scale, on
    which the floor holds the lowest ``p_floor`` of the probability and the ceiling the highest ``p_ceiling``:
    x = Phi^-1(p_floor + (1 - p_floor - p_ceiling) Phi(z)), in logarithms so that far tails stay finite."""
    z = np.asarray(z, float)
    log_k = np.log1p(-(p_floor + p_ceiling))
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf where a bound is absent; NaN stays NaN
        log_lo, log_hi = np.log(p_floor), np.log(p_ceiling)
        low = special.ndtri_exp(np.logaddexp(log_lo, log_k + special.log_ndtr(z)))
        high = -special.ndtri_exp(np.logaddexp(log_hi, log_k + special.log_ndtr(-z)))
    return np.where(z <= 0, low, high)


def latent_to_body(x: np.ndarray, p_floor: float, p_ceiling: float) -> np.ndarray:
    """:func:`body_to_latent`'s inverse: -inf where ``x`` lies in the floor's share (x <= Phi^-1(p_floor)), +inf in
    the ceiling's. Each side is computed from its own tail probability, in logarithms."""
    x = np.asarray(x, float)
    log_k = np.log1p(-(p_floor + p_ceiling))
    with np.errstate(divide="ignore", invalid="ignore"):
        low = _ndtri_exp_or_inf(_log_minus(special.log_ndtr(x), np.log(p_floor)) - log_k)
        high = -_ndtri_exp_or_inf(_log_minus(special.log_ndtr(-x), np.log(p_ceiling)) - log_k)
    middle = special.ndtri(p_floor + (1.0 - p_floor - p_ceiling) / 2)  # the latent of the body's median
    return np.where(np.isnan(x), np.nan, np.where(x <= middle, low, high))


def _log_minus(log_a: np.ndarray, log_b: float) -> np.ndarray:
    """log(a - b) from log a and log b: -inf where a <= b."""
    d = np.minimum(log_b - log_a, 0.0)
    return np.where(log_a > log_b, log_a + np.log1p(-np.exp(d)), -np.inf)


def _ndtri_exp_or_inf(log_p: np.ndarray) -> np.ndarray:
    """Phi^-1(exp(log_p)), -inf at log_p = -inf (log_p clipped to 0 against rounding)."""
    log_p = np.minimum(log_p, 0.0)
    finite = np.isfinite(log_p)
    out = np.full(log_p.shape, -np.inf)
    out[finite] = special.ndtri_exp(log_p[finite])
    return out


def truncated_scores(z: np.ndarray, z_lo: np.ndarray, z_hi: np.ndarray) -> np.ndarray:
    """Normal scores of standard-normal scores ``z`` under the standard normal truncated to (``z_lo``, ``z_hi``):
    Phi^-1((Phi(z) - Phi(z_lo)) / (Phi(z_hi) - Phi(z_lo))), each side from its own tail in logarithms so that far
    values stay finite; -inf at or below ``z_lo``, +inf at or above ``z_hi`` (a body whose own distribution would
    reach beyond its measure's bounds, conditioned to lie between them; arrays broadcast)."""
    z, z_lo, z_hi = np.broadcast_arrays(*(np.asarray(v, float) for v in (z, z_lo, z_hi)))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mass = _log_normal_mass(z_lo, z_hi)
        lower = _log_normal_mass(z_lo, z) - log_mass
        upper = _log_normal_mass(z, z_hi) - log_mass
        out = np.where(lower <= upper, _ndtri_exp_or_inf(lower), -_ndtri_exp_or_inf(upper))
    return np.where(np.isnan(z), np.nan, out)


def _log_normal_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) (-inf where b <= a), from the tail on the side where both lie far out: above the median
    as Phi(-a) - Phi(-b), so that two probabilities near 1 are not subtracted."""
    upper_side = a > 0
    return np.where(upper_side, _log_minus(special.log_ndtr(-a), special.log_ndtr(-b)),
                    _log_minus(special.log_ndtr(b), special.log_ndtr(a)))


def truncated_quantile(u: np.ndarray, z_lo: np.ndarray, z_hi: np.ndarray) -> np.ndarray:
    """:func:`truncated_scores`' inverse: the standard-normal score at level ``u`` (in (0, 1)) of the normal
    truncated to (``z_lo``, ``z_hi``), the lower or upper tail's probability whichever is smaller."""
    u, z_lo, z_hi = np.broadcast_arrays(*(np.asarray(v, float) for v in (u, z_lo, z_hi)))
    mass = np.where(z_lo > 0, special.ndtr(-z_lo) - special.ndtr(-z_hi), special.ndtr(z_hi) - special.ndtr(z_lo))
    below = special.ndtr(z_lo) + u * mass
    above = special.ndtr(-z_hi) + (1.0 - u) * mass
    return np.where(below <= above, special.ndtri(below), -special.ndtri(above))


def latent_bounds(p_floor: float, p_ceiling: float) -> tuple[float, float]:
    """The latent values of the floor and the ceiling: the top of the floor's share and the bottom of the
    ceiling's (a value there ties with every draw in its share; -inf / +inf where there is none)."""
    return float(special.ndtri(p_floor)), float(-special.ndtri(p_ceiling))


def spread_beyond_bounds(x: np.ndarray, at_floor: np.ndarray, at_ceiling: np.ndarray, seed: int) -> np.ndarray:
    """Training latents (n, D) with each value at a floor replaced by a draw beyond it, and likewise at a ceiling.

    A value at the floor has latent x_f (its floor, mapped at its own covariates); it becomes
    Phi^-1(U Phi(x_f)), U uniform: a standard normal truncated at x_f. The network then learns a smooth density
    whose mass beyond x_f is the floor's probability (a spike it would smear across the floor, much of its mass
    landing above: measured, BENCHMARKS.md), and censoring its draws at x_f gives the point mass back. What lies
    beyond the floor is never seen, so the draw's shape there does not matter. ``x`` is returned as it is when no
    value sits at a bound."""
    if not (at_floor.any() or at_ceiling.any()):
        return x
    x = np.array(x, copy=True)
    u = np.random.default_rng(seed).uniform(1e-12, 1.0, x.shape)  # never 0: a latent of -inf would poison training
    with np.errstate(divide="ignore"):
        low = special.ndtri(u * special.ndtr(x.astype(float)))
        high = -special.ndtri(u * special.ndtr(-x.astype(float)))
    x[at_floor] = low[at_floor]
    x[at_ceiling] = high[at_ceiling]
    return x


def clip_to_bounds(values: np.ndarray, floor: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """``values`` (..., D) with every value beyond a column's floor or ceiling set to it (NaN bounds: none)."""
    out = np.fmax(values, floor)  # fmax / fmin: a NaN bound leaves the value, a NaN value stays NaN
    out = np.fmin(out, ceiling)
    return np.where(np.isnan(values), values, out)


def at_bounds(y: np.ndarray, floor: np.ndarray, ceiling: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (n, D) of the values of ``y`` at (or beyond) their column's floor and at (or beyond) its ceiling (NaN
    values: neither). A value beyond a bound, which no reference subject had, is scored as the bound."""
    y = np.asarray(y, float)
    with np.errstate(invalid="ignore"):
        return y <= floor, y >= ceiling


def bounds_to_dict(floor: np.ndarray, ceiling: np.ndarray) -> dict[str, list[float | None]]:
    """The bounds for a model card (JSON: None where a column has none)."""
    return {name: [None if np.isnan(v) else float(v) for v in arr] for name, arr in
            (("floor", floor), ("ceiling", ceiling))}


def bounds_from_dict(card: dict | None, d: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bounds_to_dict`'s inverse; a card without bounds (saved before them) has none."""
    if not card:
        return np.full(d, np.nan), np.full(d, np.nan)
    return tuple(np.array([np.nan if v is None else v for v in card[k]], float) for k in ("floor", "ceiling"))
