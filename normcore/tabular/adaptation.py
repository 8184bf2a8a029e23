"""Site adaptation of a fitted location-scale stage: empirical-Bayes level effects from a few local controls.

Every tabular model with a :class:`~normcore.tabular.location_scale.LocationScale` stage models an IDP as
y = mu(age) + b[level] + sigma(age) * exp(g[level] / 2) * r, with one location effect b and one log-variance
effect g per level of each categorical covariate (site, scanner, sex), and r the standardised residual
whose shape (and, for the diffusion model, dependence between IDPs) the rest of the model describes. (A stage
with level curves, those of a diffusion model's batch covariates, adds each training level's own deviation
from mu's age curve; a new level has none, so it follows the common curve.)
Adapting to a level the reference never saw estimates b and g for it from K local controls and leaves
everything else of the reference as it is:

- location: the controls' precision-weighted mean residual d against the reference without the level's
  effects, shrunk towards the mean m of the training levels' effects by tau^2 / (tau^2 + v), where tau^2 is
  the spread of the training levels' effects and v the sampling variance of d (sigma^2 / K);
- log-variance: the log of the controls' mean squared standardised residual (degrees of freedom reduced by
  what the location estimate used), shrunk the same way towards the training levels' mean log-variance
  effect with its own spread, its sampling variance being 2 / K;
- the remaining uncertainty of the location effect (its posterior variance) is added to the predictive
  variance, so a handful of controls gives cautious, wider centiles and many controls the site's own.

A level seen in training is refined the same way, with the reference's own estimate as the prior and
its training count setting the prior's precision. IDPs absent from the controls keep the reference
behaviour for a new level: the mean training effect, with the spread of the training levels' effects
added to the variance (the predictive of a random new site).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normcore._utils.errors import InputError
from normcore.tabular.location_scale import LocationScale
from normcore.tabular.scoring import units_hint

MIN_TRAINING_LEVELS = 2  # the spread of level effects needs at least two levels to be estimated at all
FEW_TRAINING_LEVELS = 5  # below this the spread is a rough estimate: said in a warning


@dataclass
class LevelEstimate:
    """The adapted effects of one level for all IDPs (NaN-free), and what they were estimated from."""

    mu: np.ndarray  # (D,) location effect
    logvar: np.ndarray  # (D,) log-variance effect, including the location's posterior uncertainty
    weight_location: np.ndarray  # (D,) share of the local estimate in the location effect (0 = prior only)
    weight_scale: np.ndarray  # (D,) the same for the log-variance effect
    n_controls: np.ndarray  # (D,) controls with a value for each IDP
    surprise: np.ndarray  # (D,) the larger of the local location's and log variance's distances from the prior, in
    # SDs of the training levels' spread and the sampling error (0 where under two controls have a value)


def training_level_effects(ls: LocationScale, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(levels, D) location and log-variance effects of covariate ``k``'s training levels (level 0: zero)."""
    n_lv = ls.n_levels[k]
    mu = np.stack([ls.level_effect(k, lvl)[0] for lvl in range(n_lv)])
    lv = np.stack([ls.level_effect(k, lvl)[1] for lvl in range(n_lv)])
    return mu, lv


def estimate_level(ls: LocationScale, k: int, level: int | None, age: np.ndarray, codes: np.ndarray,
                   y: np.ndarray, train_levels: int, train_count: float | None,
                   unmeasured: np.ndarray | None = None) -> LevelEstimate:
    """Empirical-Bayes effects of covariate ``k`` at ``level`` (None: a new level) from controls (age, codes, y).

    ``codes[:, k]`` holds the code of the level being estimated (a new level already added to ``ls``) for every
    control; the other columns are the controls' own levels of the other covariates. ``y`` is (K, D) with NaN
    where an IDP is absent. ``train_levels`` is how many training levels the covariate had; ``train_count`` the
    training rows of a known level (its estimate's precision). ``unmeasured`` (D,) marks IDPs a known level had no
    training value of: their effect is the other levels' mean (:meth:`LocationScale._average_unseen_levels`), so
    its prior spread is theirs, as for a new level, not a precision from training rows it never had.
    """
    mu_tr, lv_tr = training_level_effects(ls, k)
    mu_tr, lv_tr = mu_tr[:train_levels], lv_tr[:train_levels]
    if level is None:
        prior_mu, prior_lv = mu_tr.mean(0), lv_tr.mean(0)
        tau2_mu, tau2_lv = mu_tr.var(0, ddof=1), lv_tr.var(0, ddof=1)
    else:
        prior_mu, prior_lv = ls.level_effect(k, level)
    # the reference without the level's effects (its age curve, if the stage has level curves, stays):
    # residuals hold the level's effect
    mu0, sd0 = ls.location_scale(age, codes, without_level_effect=k)  # (K, D)
    var_typical = np.exp(prior_lv) * sd0**2  # within-level variance at the prior's scale
    present = ~np.isnan(y)
    n = present.sum(0).astype(float)  # (D,)
    safe = np.where(present, y, 0.0)
    w = np.where(present, 1.0 / var_typical, 0.0)
    d = (w * (safe - mu0)).sum(0) / np.maximum(w.sum(0), 1e-300)
    v = 1.0 / np.maximum(w.sum(0), 1e-300)  # sampling variance of d
    if level is not None:  # prior precision: the reference's own estimate from its training rows
        tau2_mu = (np.exp(prior_lv) * np.mean(sd0**2, axis=0)) / max(float(train_count or 1.0), 1.0)
        tau2_lv = np.full_like(prior_lv, 2.0 / max(float(train_count or 1.0), 1.0))
        others = [lvl for lvl in range(train_levels) if lvl != level]
        if unmeasured is not None and unmeasured.any() and len(others) >= 2:
            tau2_mu = np.where(unmeasured, mu_tr[others].var(0, ddof=1), tau2_mu)
            tau2_lv = np.where(unmeasured, lv_tr[others].var(0, ddof=1), tau2_lv)
    shrink_mu = np.where(n > 0, tau2_mu / (tau2_mu + v), 0.0)
    mu = prior_mu + shrink_mu * (d - prior_mu)
    post_var_mu = np.where(n > 0, shrink_mu * v, tau2_mu)  # posterior variance of the location effect
    # log-variance: mean squared residual around the adapted location, at the reference's level-0 scale
    z2 = np.where(present, (safe - mu0 - mu) ** 2 / sd0**2, 0.0)
    dof = np.maximum(n - shrink_mu, 1.0)
    g_hat = np.log(np.maximum(z2.sum(0) / dof, 1e-12))
    v_g = 2.0 / np.maximum(n, 1.0)
    shrink_lv = np.where(n > 1, tau2_lv / (tau2_lv + v_g), 0.0)
    g = prior_lv + shrink_lv * (g_hat - prior_lv)
    # predictive variance = within-level variance + posterior variance of the location effect
    within = np.exp(g) * np.mean(sd0**2, axis=0)
    logvar = g + np.log1p(post_var_mu / np.maximum(within, 1e-300))
    # how far the local estimate lies from the prior in SDs of what the training levels differ by (and the sampling
    # error), for a known level too: its prior's own precision would call a real drift of a refined site surprising
    surprise = np.zeros_like(d)
    if len(mu_tr) >= 2:  # one training level: no spread, no surprise
        between_mu, between_lv = mu_tr.var(0, ddof=1), lv_tr.var(0, ddof=1)
        surprise = np.where(n > 1, np.maximum(np.abs(d - prior_mu) / np.sqrt(between_mu + v),
                                              np.abs(g_hat - prior_lv) / np.sqrt(between_lv + v_g)), 0.0)
    return LevelEstimate(mu, logvar, shrink_mu, shrink_lv, n.astype(int), surprise)


FAR_FROM_EVERY_LEVEL = 8.0
"""A level's local estimate this many SDs (of the training levels' spread and its sampling error) from its prior is
not a site effect: such IDPs are named in the adaptation's warnings (other units, another column, another
FreeSurfer version). Real new sites sit within a few: BENCHMARKS.md, forty-eighth session."""


def far_from_every_level(label: str, idps: list[str], estimate: LevelEstimate, y: np.ndarray,
                         training_mean: dict[str, float], most: int = 4) -> str | None:
    """A warning naming the IDPs whose local estimate at level ``label`` lies beyond :data:`FAR_FROM_EVERY_LEVEL`
    of its prior (``y``: the controls' values, (K, D)), with the units their values' ratio to the training mean
    points to when it is near a power of ten; None when there are none."""
    far = np.flatnonzero(estimate.surprise > FAR_FROM_EVERY_LEVEL)
    if not far.size:
        return None
    names = ", ".join(repr(idps[j]) for j in far[:most]) + (", ..." if far.size > most else "")
    ratios = [float(np.nanmedian(y[:, j])) / training_mean[idps[j]] for j in far if training_mean.get(idps[j])]
    return (f"{label}: {far.size} IDP(s) ({names}) differ from the reference by {estimate.surprise[far].min():.0f}-"
            f"{estimate.surprise[far].max():.0f} SDs of what sites differ by{units_hint(ratios)}: check the units, the "
            "column mapping and the FreeSurfer version; the adapted effects follow these values only in part, so "
            "their z are not to be trusted")


def check_levels_can_be_learnt(ls: LocationScale, covariate: str, k: int) -> None:
    if ls.n_levels[k] < MIN_TRAINING_LEVELS:
        raise InputError(f"covariate {covariate!r} had {ls.n_levels[k]} level(s) in training; learning a new level "
                         f"needs the spread of at least {MIN_TRAINING_LEVELS} training levels' effects")
