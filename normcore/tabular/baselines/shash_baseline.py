"""Built-in classic baseline: per-IDP heteroscedastic B-spline regression with a SHASH likelihood.

For each IDP independently: y = mu(c) + sigma(c) * r, where mu and log sigma^2 are ridge regressions
on a cubic B-spline basis of age plus categorical effects (:class:`~normcore.tabular.location_scale.LocationScale`)
and the standardised residual r follows a sinh-arcsinh distribution fitted by maximum likelihood
(the warped-likelihood idea of PCNtoolkit's BLR, fitted with numpy/scipy). Centiles and z-scores are
exact (no sampling); a categorical covariate left free is marginalised as a mixture over training
levels. It is a product-of-marginals model: ``sample`` draws IDPs independently.

A categorical covariate of two levels or more, each with at least :data:`MIN_LEVEL_ROWS_FOR_CURVES` training
rows (sex, in most tables; the sites of a large consortium), also gives each level its own age curve of the
location, kept per IDP only where leave-one-out error says it predicts better (the location-scale stage's level
curves): men and women whose measures age differently are not scored on one curve shifted by a constant.

A measure with a point mass at its floor or ceiling (a value many training rows share exactly, such as a
``5th-Ventricle`` of 0; :mod:`~normcore.tabular.point_masses`) is zero-adjusted, as GAMLSS's zero-adjusted families
are: the location-scale stage and the SHASH are fitted to the values between the bounds and truncated to lie
between them, the probability of each bound at each row's covariates is a penalised multinomial logistic regression
(:mod:`~normcore.tabular.point_mass_shares`), a value at a bound has a randomised centile uniform within the bound's
probability (seeded by ``seed``), and quantiles and draws never cross a bound.
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from scipy import special

from normcore._utils.progress import Progress
from normcore.tabular.base import NormativeModel
from normcore.tabular.baselines.shash import fit_shash, shash_inverse, shash_moments, shash_z
from normcore.tabular.covariates import MARGINALISE, CovariateEncoder, expand_levels
from normcore.tabular.location_scale import LocationScale
from normcore.tabular.multivariate_calibration import cross_fitted
from normcore.tabular.params import Rule, boolean, integer, number
from normcore.tabular.point_mass_shares import PointMassShares
from normcore.tabular.point_masses import (
    at_bounds,
    body_to_latent,
    bound_shares,
    bounds_from_dict,
    bounds_to_dict,
    clip_to_bounds,
    find_bounds,
    pooled_bodies,
    truncated_quantile,
    truncated_scores,
)
from normcore.tabular.predictive_mixture import PredictiveMixture
from normcore.tabular.scoring import mixture_z

NORMAL = {"loc": 0.0, "scale": 1.0, "eps": 0.0, "delta": 1.0}
"""The SHASH parameters of the standard normal: the residual distribution of a body too small for its own (fitted
to fcon1000's 10 present 5th ventricles, the SHASH's scale went to 2e-7; to its 33 hypointensity volumes, 2e-72)."""
BODY_LEVELS = (1e-16, 1.0 - 2.0**-53)
"""The levels of a truncated body kept within these (a level of exactly 0 or 1, where Phi of a far normal score
rounds, would be an infinite value)."""
MIN_LEVEL_ROWS_FOR_CURVES = 100
"""A categorical covariate whose every level has at least this many training rows gets level curves of the location
(a curve has n_knots + 4 coefficients per level): fcon1000's sites of 9-200 subjects, given curves, made held-out
MSLL worse on each of four splits, while a sex x age interaction left out biased z (BENCHMARKS.md, forty-ninth
session)."""
N_MOMENT_NODES = 40
"""Gauss-Hermite nodes for the moments of a truncated body (as in :func:`~.shash.shash_moments`)."""


def _migrate_v1(card: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Version 1 cards have no point masses (``"point_masses"``, which version 2 may hold and an older normcore
    would ignore): nothing to change."""


class LocationScaleSHASH(NormativeModel):
    """Per-IDP location-scale SHASH normative model (registry name ``shash-baseline``)."""

    MODEL_TYPE = "shash-baseline"
    FORMAT = "normcore-baseline-location-scale-shash"
    FORMAT_VERSION = 2
    MIGRATIONS: ClassVar[dict] = {1: _migrate_v1}
    EXACT = True

    PARAM_RULES: ClassVar[dict[str, Rule]] = {"n_knots": integer(1, 50), "ridge": number(0, 1e6),
                                               "seed": integer(0, 2**32 - 1), "allow_unseen": boolean}

    def __init__(self, n_knots: int = 4, ridge: float = 1e-3, seed: int = 0, allow_unseen: bool = False):
        self.n_knots = n_knots
        self.ridge = ridge
        self.seed = seed
        self.allow_unseen = allow_unseen

    def _fit_core(self, data: pd.DataFrame, age: str, covariates: list[str], label: str, progress: Progress,
                  dropped_rows: int) -> None:
        """Fit every IDP independently on all complete rows (no validation split: nothing is early-stopped)."""
        start = time.perf_counter()
        idps = self.idps
        self.encoder_ = CovariateEncoder(age, covariates).fit(data)
        codes = self.encoder_.codes(data, label=label)
        a = data[age].to_numpy(float)
        y = data[idps].to_numpy(float)
        n_levels = [len(self.encoder_.levels[c]) for c in covariates]
        self.floor_, self.ceiling_ = find_bounds(y)
        y_body = self._body_values(y)  # values at a point mass left out of the stages below
        curves = [k for k, n_lv in enumerate(n_levels)
                  if n_lv > 1 and np.bincount(codes[:, k], minlength=n_lv).min() >= MIN_LEVEL_ROWS_FOR_CURVES]
        self.location_scale_ = LocationScale(self.n_knots, self.ridge, curves)
        r_out = self.location_scale_.fit_transform(a, codes, y_body, n_levels)  # leave-one-out residuals
        self.pooled_body_ = pooled_bodies(y_body, self.floor_, self.ceiling_)
        mu, sd = self._location_scale_of(a, codes)
        r = (y_body - mu) / sd
        self.shash_ = []
        for j in range(len(idps)):  # a pooled body (under 100 values) keeps the normal: its SHASH would overfit
            self.shash_.append(dict(NORMAL) if j in self.pooled_body_ else fit_shash(r[~np.isnan(r[:, j]), j]))
            progress.update("fit", j + 1, len(idps))
        self.point_mass_shares_ = self.bound_share_ = None
        if self._has_bounds():
            at_floor, at_ceiling = at_bounds(y, self.floor_, self.ceiling_)
            self.point_mass_shares_ = PointMassShares().fit(self.location_scale_.age_basis(a), codes, n_levels,
                                                            at_floor, at_ceiling, ~np.isnan(y), seed=self.seed)
            self.bound_share_ = bound_shares(y, self.floor_, self.ceiling_)
        _, z = self._scores(y, a, codes, self.seed)
        self.z_correlation_ = np.corrcoef(z, rowvar=False).reshape(len(idps), len(idps)).tolist()
        # d2 among new people, not chi2(D): from the training rows' z as wide as new people's
        self.multivariate_calibration_ = cross_fitted(z * self._leave_one_out_widening(z, r_out), seed=self.seed)
        self.history_ = {"fit_time_s": time.perf_counter() - start, "n_train": int(len(data))}
        self.training_summary_ = {"n_train": int(len(data)), "n_validation": 0, "dropped_rows": int(dropped_rows),
                                  "age": {"min": float(a.min()), "max": float(a.max())},
                                  "idp_mean": {c: float(data[c].mean()) for c in idps},
                                  "idp_std": {c: float(data[c].std()) for c in idps}}

    def _leave_one_out_widening(self, z: np.ndarray, r_out: np.ndarray) -> np.ndarray:
        """(D,) how much wider new people's z are than the training rows' own, per IDP: the ratio of the interquartile
        ranges of the rows' z from their leave-one-out residuals ``r_out`` and of their in-sample z ``z`` (1 for an IDP
        with a point mass or a pooled body, or without a spread to compare). The multivariate score's calibration is
        fitted to the training rows' z widened by it: in-sample z sit closer to the fit than a new person's. A ratio of
        spreads, not the leave-one-out z themselves: a site with one or two training subjects has leverage near 1, and
        its rows' leave-one-out z run far out (BENCHMARKS.md, forty-ninth session)."""
        ratio = np.ones(len(self.idps))
        floor, ceiling = self._bounds()
        for j, p in enumerate(self.shash_):
            ok = np.isfinite(z[:, j]) & np.isfinite(r_out[:, j])
            if j in self.pooled_body_ or not (np.isnan(floor[j]) and np.isnan(ceiling[j])) or ok.sum() < 4:
                continue
            inner = np.subtract(*np.percentile(z[ok, j], [75, 25]))
            outer = np.subtract(*np.percentile(shash_z(r_out[ok, j], p), [75, 25]))
            if inner > 0 and np.isfinite(outer) and outer > 0:
                ratio[j] = outer / inner
        return ratio

    # ------------------------------------------------------------------ exact distribution
    def _level_combinations(self, codes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Expand marginalised codes into (resolved codes, weight) pairs over the training levels."""
        freqs = [np.asarray(self.encoder_.frequencies[col], float) for col in self.encoder_.categorical]
        return expand_levels(codes, [f / f.sum() for f in freqs], lambda k, column: column == MARGINALISE)

    def _bounded_columns(self) -> np.ndarray:
        """Indices of the IDPs with a floor or a ceiling (empty for models without point masses)."""
        floor, ceiling = self._bounds()
        return np.flatnonzero(~np.isnan(floor) | ~np.isnan(ceiling))

    def _shares(self, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(n, D, 2) probabilities of each IDP's floor and ceiling at rows' covariates (codes resolved)."""
        return self.point_mass_shares_.predict(self.location_scale_.age_basis(age), codes)

    def _body_edges(self, j: int, mu: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The normal scores of IDP ``j``'s floor and ceiling under rows' body distributions (-inf / +inf: none)."""
        edges = []
        for bound, missing in ((self.floor_[j], -np.inf), (self.ceiling_[j], np.inf)):
            edges.append(np.full(len(mu), missing) if np.isnan(bound) else shash_z((bound - mu) / sd, self.shash_[j]))
        return edges[0], edges[1]

    def _component_scores(self, y: np.ndarray, age: np.ndarray, codes: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Normal scores (K, n, D) of observations y (n, D) under each of the K resolved level combinations of
        marginalised codes (K = 1 without), their weights (K, n, 1), and, for a model with point masses, each
        combination's probabilities of the bounds (K, n, D, 2) (else None). The score of a value between its IDP's
        bounds is that of its centile under the zero-adjusted distribution; at a bound it is not meaningful."""
        bounded = self._bounded_columns()
        scores, weights, shares = [], [], []
        for c, w in self._level_combinations(codes):
            mu, sd = self._location_scale_of(age, c)
            r = (y - mu) / sd
            z = np.column_stack([shash_z(r[:, j], p) for j, p in enumerate(self.shash_)])
            if len(bounded):
                share = self._shares(age, c)
                for j in bounded:
                    body = truncated_scores(z[:, j], *self._body_edges(j, mu[:, j], sd[:, j]))
                    z[:, j] = body_to_latent(body, share[:, j, 0], share[:, j, 1])
                shares.append(share)
            scores.append(z)
            weights.append(w[:, None])
        return np.stack(scores), np.stack(weights), np.stack(shares) if shares else None

    def _scores(self, y: np.ndarray, age: np.ndarray, codes: np.ndarray, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """Exact centiles and z (n, D) of observations y (NaN: missing); a value at a point mass gets a randomised
        centile, uniform within its bound's probability at the row's covariates (drawn from ``seed``)."""
        scores, weights, shares = self._component_scores(np.nan_to_num(y), age, codes)
        z = scores[0] if len(scores) == 1 else mixture_z(scores, weights)
        centile = (weights * special.ndtr(scores)).sum(axis=0)
        if shares is None:
            return centile, z
        share = (weights[..., None] * shares).sum(axis=0)  # (n, D, 2): the mixture's probabilities of the bounds
        at_floor, at_ceiling = at_bounds(y, self.floor_, self.ceiling_)
        log_u = np.log1p(-np.random.default_rng(seed).random(y.shape))  # log U, U uniform on (0, 1]
        with np.errstate(divide="ignore"):  # a side without a bound has probability 0 (and no value at it)
            log_floor, log_ceiling = log_u + np.log(share[..., 0]), log_u + np.log(share[..., 1])
            centile = np.where(at_floor, np.exp(log_floor), np.where(at_ceiling, -np.expm1(log_ceiling), centile))
            z = np.where(at_floor, special.ndtri_exp(log_floor),
                         np.where(at_ceiling, -special.ndtri_exp(log_ceiling), z))
        return centile, z

    def cdf(self, y: np.ndarray, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Exact conditional CDF (n, D) of observations y (n, D) (mixture over marginalised levels; at a floor its
        probability, 0 below it, 1 from a ceiling up)."""
        z, w, shares = self._component_scores(y, age, codes)
        out = (w * special.ndtr(z)).sum(axis=0)
        if shares is not None:
            floor_share = (w[..., None] * shares).sum(axis=0)[..., 0]
            with np.errstate(invalid="ignore"):  # NaN bounds compare False
                out = np.where(y < self.floor_, 0.0, np.where(y == self.floor_, floor_share, out))
                out = np.where(y >= self.ceiling_, 1.0, out)
        return out

    def _values(self, z: np.ndarray, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Values (n, D) at levels Phi(``z``) (n, D) of each row's distribution (codes resolved): the quantile
        function."""
        mu, sd = self._location_scale_of(age, codes)
        values = np.column_stack([shash_inverse(z[:, j], p) for j, p in enumerate(self.shash_)]) * sd + mu
        bounded = self._bounded_columns()
        if len(bounded):
            share = self._shares(age, codes)
            u = special.ndtr(z)
            for j in bounded:
                p_floor, p_ceiling = share[:, j, 0], share[:, j, 1]
                body_u = np.clip((u[:, j] - p_floor) / (1.0 - p_floor - p_ceiling), *BODY_LEVELS)
                with np.errstate(invalid="ignore", over="ignore"):  # levels in a bound's share: replaced below
                    body_z = truncated_quantile(body_u, *self._body_edges(j, mu[:, j], sd[:, j]))
                    body = sd[:, j] * shash_inverse(body_z, self.shash_[j]) + mu[:, j]
                values[:, j] = np.where(u[:, j] <= p_floor, self.floor_[j],
                                        np.where(u[:, j] >= 1.0 - p_ceiling, self.ceiling_[j], body))
            values = clip_to_bounds(values, self.floor_, self.ceiling_)
        return values

    def quantile(self, q: float, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Exact conditional q-quantile (n, D); by bisection on the mixture CDF when marginalising."""
        combos = self._level_combinations(codes)
        if not len(self._bounded_columns()):  # the closed form, as before point masses
            zq = np.full(len(self.shash_), special.ndtri(q))
            values = [self.location_scale_.inverse_transform(
                np.tile([shash_inverse(zq[j], p) for j, p in enumerate(self.shash_)], (len(age), 1)), age, c)
                for c, _ in combos]
        else:
            values = [self._values(np.full((len(age), len(self.idps)), special.ndtri(q)), age, c) for c, _ in combos]
        if len(combos) == 1:
            return values[0]
        lo, hi = np.min(values, axis=0), np.max(values, axis=0)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid, age, codes) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        out = 0.5 * (lo + hi)
        if len(self._bounded_columns()):  # a level within a bound's share is the bound itself, not a hair beside it
            floor, below_ceiling = (np.broadcast_to(np.nan_to_num(b), out.shape) for b in
                                    (self.floor_, np.nextafter(self.ceiling_, -np.inf)))
            at_floor = ~np.isnan(self.floor_) & (self.cdf(floor, age, codes) >= q)
            at_ceiling = ~np.isnan(self.ceiling_) & (self.cdf(below_ceiling, age, codes) < q)
            out = np.where(at_floor, self.floor_, np.where(at_ceiling, self.ceiling_, out))
        return out

    # ------------------------------------------------------------------ model cores (see NormativeModel)
    def _score_core(self, y, age, codes, n_samples, seed, progress):
        """Exact centiles and z (``n_samples`` is not used; ``seed`` only draws the randomised centiles of values at
        a point mass): z from the SHASH's normal score itself, so that it stays finite and distinct however far out
        a value lies (mixed in logarithms over marginalised levels, :func:`~normcore.tabular.scoring.mixture_z`);
        the training z-correlation (D, D) for every row."""
        centile, z = self._scores(y, age, codes, self.seed if seed is None else seed)
        return centile, z, np.zeros_like(centile, dtype=bool), np.asarray(self.z_correlation_)

    def _quantile_core(self, ages, codes, quantiles, n_samples, seed, progress) -> np.ndarray:
        return np.stack([self.quantile(float(q), ages, codes) for q in quantiles])

    def _sample_core(self, age, codes, n, seed, progress) -> np.ndarray:
        """Independent draws per IDP (product of marginals); marginalised levels drawn per sample."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        rep_age = np.repeat(age, n)
        rep_codes = self.encoder_.resolve_marginalised(np.repeat(codes, n, axis=0), rng)
        z = rng.standard_normal((len(rep_age), len(self.idps)))
        if len(self._bounded_columns()):
            return self._values(z, rep_age, rep_codes).reshape(len(age), n, len(self.idps))
        r = np.column_stack([shash_inverse(z[:, j], p) for j, p in enumerate(self.shash_)])
        return self.location_scale_.inverse_transform(r, rep_age, rep_codes).reshape(len(age), n, len(self.idps))

    def predict_moments(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
                        progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact predictive mean and variance (n, D) (marginalised levels: the first level); an IDP with point
        masses has the moments of its mixture of floor, ceiling and truncated body (:meth:`predict_mixture`)."""
        mixture = self.predict_mixture(df, n_samples, seed, progress)
        return mixture.mean, mixture.var

    def predict_mixture(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
                        progress: Progress | None = None) -> PredictiveMixture:
        """Exact probabilities of each row's floor and ceiling and its body's moments (marginalised levels: the first
        level); the moments of a truncated body by Gauss-Hermite quadrature of its quantile function."""
        self._check_fitted()
        age, codes = self._covariates_of(df, "table")
        codes = np.where(codes == MARGINALISE, 0, codes)
        mom = np.array([shash_moments(p) for p in self.shash_])  # (D, 2) on the standardised scale
        mu, sd = self._location_scale_of(age, codes)
        mean, var = mu + sd * mom[:, 0], (sd**2) * mom[:, 1]
        bounded = self._bounded_columns()
        if not len(bounded):
            return PredictiveMixture.continuous(mean, var)
        nodes, weights = special.roots_hermitenorm(N_MOMENT_NODES)
        weights = weights / weights.sum()
        share = self._shares(age, codes)
        floor_share, ceiling_share = np.zeros_like(mean), np.zeros_like(mean)
        for j in bounded:
            lo, hi = self._body_edges(j, mu[:, j], sd[:, j])
            body = mu[:, j, None] + sd[:, j, None] * shash_inverse(
                truncated_quantile(np.clip(special.ndtr(nodes), *BODY_LEVELS)[None, :], lo[:, None], hi[:, None]),
                self.shash_[j])
            floor_share[:, j], ceiling_share[:, j] = share[:, j, 0], share[:, j, 1]
            mean[:, j] = body @ weights
            var[:, j] = np.maximum(body**2 @ weights - mean[:, j] ** 2, 0.0)
        return PredictiveMixture(*self._bounds(), floor_share, ceiling_share, mean, var)

    def _bound_shares(self) -> np.ndarray:
        return np.asarray(self.bound_share_, float)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        # no weights: the file is kept so every model folder has the same two files
        entries = {"location_scale": self.location_scale_.to_dict(), "shash": self.shash_,
                   "z_correlation": self.z_correlation_}
        if self._has_bounds():  # cards of models without point masses stay as they were before them
            entries["point_masses"] = {**bounds_to_dict(self.floor_, self.ceiling_),
                                       "pooled_body": {str(j): list(v) for j, v in self.pooled_body_.items()},
                                       "shares": self.point_mass_shares_.to_dict(),
                                       "training_shares": np.asarray(self.bound_share_).tolist()}
        return {"empty": torch.zeros(0)}, entries

    def _restore(self, tensors: dict[str, torch.Tensor], card: dict, path: str) -> None:
        self.location_scale_ = LocationScale.from_dict(card["location_scale"])
        self.shash_ = card["shash"]
        self.z_correlation_ = card["z_correlation"]
        masses = card.get("point_masses")
        self.floor_, self.ceiling_ = bounds_from_dict(masses, len(self.idps))
        self.pooled_body_ = {int(j): tuple(v) for j, v in (masses or {}).get("pooled_body", {}).items()}
        self.point_mass_shares_ = PointMassShares.from_dict(masses["shares"]) if masses else None
        self.bound_share_ = masses["training_shares"] if masses else None
