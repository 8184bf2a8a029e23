"""Built-in classic baseline: per-IDP heteroscedastic B-spline regression with a SHASH likelihood.

For each IDP independently: y = mu(c) + sigma(c) * r, where mu and log sigma^2 are ridge regressions
on a cubic B-spline basis of age plus categorical effects (:class:`~normcore.tabular.preprocessing.LocationScale`)
and the standardised residual r follows a sinh-arcsinh distribution fitted by maximum likelihood
(the warped-likelihood idea of PCNtoolkit's BLR, fitted with numpy/scipy). Centiles and z-scores are
exact (no sampling); a categorical covariate left free is marginalised as a mixture over training
levels. It is a product-of-marginals model: ``sample`` draws IDPs independently.
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
from normcore.tabular.params import Rule, boolean, integer, number
from normcore.tabular.preprocessing import MARGINALISE, CovariateEncoder, LocationScale
from normcore.tabular.scoring import mixture_z


class LocationScaleSHASH(NormativeModel):
    """Per-IDP location-scale SHASH normative model (registry name ``shash-baseline``)."""

    MODEL_TYPE = "shash-baseline"
    FORMAT = "normcore-baseline-location-scale-shash"
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
        self.location_scale_ = LocationScale(self.n_knots, self.ridge).fit(a, codes, y, n_levels)
        r = self.location_scale_.transform(y, a, codes)
        self.shash_ = []
        for j in range(len(idps)):
            self.shash_.append(fit_shash(r[:, j]))
            progress.update("fit", j + 1, len(idps))
        z = np.column_stack([shash_z(r[:, j], p) for j, p in enumerate(self.shash_)])
        self.z_correlation_ = np.corrcoef(z, rowvar=False).reshape(len(idps), len(idps)).tolist()
        self.history_ = {"fit_time_s": time.perf_counter() - start, "n_train": int(len(data))}
        self.training_summary_ = {"n_train": int(len(data)), "n_validation": 0, "dropped_rows": int(dropped_rows),
                                  "age": {"min": float(a.min()), "max": float(a.max())},
                                  "idp_mean": {c: float(data[c].mean()) for c in idps},
                                  "idp_std": {c: float(data[c].std()) for c in idps}}

    # ------------------------------------------------------------------ exact distribution
    def _level_combinations(self, codes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Expand marginalised codes into (resolved codes, weight) pairs over the training levels."""
        combos = [(codes.copy(), np.ones(len(codes)))]
        for k, col in enumerate(self.encoder_.categorical):
            freqs = np.asarray(self.encoder_.frequencies[col], float)
            freqs = freqs / freqs.sum()
            expanded = []
            for c, w in combos:
                free = c[:, k] == MARGINALISE
                if not free.any():
                    expanded.append((c, w))
                    continue
                for lvl, f in enumerate(freqs):
                    c2 = c.copy()
                    c2[free, k] = lvl
                    expanded.append((c2, np.where(free, w * f, w)))
            combos = expanded
        # rows without marginalisation appear once per expansion; keep each row's weights summing to 1
        total = sum(w for _, w in combos)
        return [(c, w / total) for c, w in combos]

    def _component_scores(self, y: np.ndarray, age: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normal scores (K, n, D) of observations y (n, D) under each of the K resolved level combinations of
        marginalised codes (K = 1 without), and their weights (K, n, 1)."""
        scores, weights = [], []
        for c, w in self._level_combinations(codes):
            r = self.location_scale_.transform(y, age, c)
            scores.append(np.column_stack([shash_z(r[:, j], p) for j, p in enumerate(self.shash_)]))
            weights.append(w[:, None])
        return np.stack(scores), np.stack(weights)

    def cdf(self, y: np.ndarray, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Exact conditional CDF (n, D) of observations y (n, D) (mixture over marginalised levels)."""
        z, w = self._component_scores(y, age, codes)
        return (w * special.ndtr(z)).sum(axis=0)

    def quantile(self, q: float, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Exact conditional q-quantile (n, D); by bisection on the mixture CDF when marginalising."""
        combos = self._level_combinations(codes)
        zq = np.full(len(self.shash_), special.ndtri(q))
        values = [self.location_scale_.inverse_transform(
            np.tile([shash_inverse(zq[j], p) for j, p in enumerate(self.shash_)], (len(age), 1)), age, c)
            for c, _ in combos]
        if len(combos) == 1:
            return values[0]
        lo, hi = np.min(values, axis=0), np.max(values, axis=0)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid, age, codes) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    # ------------------------------------------------------------------ model cores (see NormativeModel)
    def _score_core(self, y, age, codes, n_samples, seed, progress):
        """Exact centiles and z (``n_samples`` and ``seed`` are not used): z from the SHASH's normal score itself, so
        that it stays finite and distinct however far out a value lies (mixed in logarithms over marginalised levels,
        :func:`~normcore.tabular.scoring.mixture_z`); the training z-correlation (D, D) for every row."""
        scores, weights = self._component_scores(np.nan_to_num(y), age, codes)
        z = scores[0] if len(scores) == 1 else mixture_z(scores, weights)
        centile = (weights * special.ndtr(scores)).sum(axis=0)
        return centile, z, np.zeros_like(centile, dtype=bool), np.asarray(self.z_correlation_)

    def _quantile_core(self, ages, codes, quantiles, n_samples, seed, progress) -> np.ndarray:
        return np.stack([self.quantile(float(q), ages, codes) for q in quantiles])

    def _sample_core(self, age, codes, n, seed, progress) -> np.ndarray:
        """Independent draws per IDP (product of marginals); marginalised levels drawn per sample."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        rep_age = np.repeat(age, n)
        rep_codes = self.encoder_.resolve_marginalised(np.repeat(codes, n, axis=0), rng)
        z = rng.standard_normal((len(rep_age), len(self.idps)))
        r = np.column_stack([shash_inverse(z[:, j], p) for j, p in enumerate(self.shash_)])
        return self.location_scale_.inverse_transform(r, rep_age, rep_codes).reshape(len(age), n, len(self.idps))

    def predict_moments(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
                        progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact predictive mean and variance (n, D) (marginalised levels: the first level)."""
        self._check_fitted()
        age, codes = self._covariates_of(df, "table")
        codes = np.where(codes == MARGINALISE, 0, codes)
        mom = np.array([shash_moments(p) for p in self.shash_])  # (D, 2) on the standardised scale
        mu, sd = self.location_scale_.location_scale(age, codes)
        return mu + sd * mom[:, 0], (sd**2) * mom[:, 1]

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        # no weights: the file is kept so every model folder has the same two files
        return {"empty": torch.zeros(0)}, {"location_scale": self.location_scale_.to_dict(), "shash": self.shash_,
                                           "z_correlation": self.z_correlation_}

    def _restore(self, tensors: dict[str, torch.Tensor], card: dict, path: str) -> None:
        self.location_scale_ = LocationScale.from_dict(card["location_scale"])
        self.shash_ = card["shash"]
        self.z_correlation_ = card["z_correlation"]
