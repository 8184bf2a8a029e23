"""Built-in classic baseline: per-IDP heteroscedastic B-spline regression with a SHASH likelihood.

For each IDP independently: y = mu(c) + sigma(c) * r, where mu and log sigma^2 are ridge regressions
on a cubic B-spline basis of age plus categorical effects (:class:`~normcore.preprocessing.LocationScale`)
and the standardised residual r follows a sinh-arcsinh distribution fitted by maximum likelihood
(the warped-likelihood idea of PCNtoolkit's BLR, fitted with numpy/scipy in seconds). Centiles and
z-scores are exact (no sampling); a categorical covariate left free is marginalised as a mixture over
training levels. It is a product-of-marginals model: ``sample`` draws IDPs independently.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import special

from normcore import __version__
from normcore.baselines.shash import fit_shash, shash_inverse, shash_moments, shash_z
from normcore.data.validation import prepare_training_table
from normcore.errors import InputError
from normcore.persistence import load_model_dir, save_model_dir
from normcore.preprocessing import MARGINALISE, CovariateEncoder, LocationScale, category_label
from normcore.progress import Progress
from normcore.tabular.scoring import assemble_scores, mahalanobis

FORMAT = "normcore-baseline-location-scale-shash"


class LocationScaleSHASH:
    """Per-IDP normative baseline with the same interface as :class:`~normcore.NormativeDiffusion`."""

    PARAMS = ("n_knots", "ridge", "seed", "allow_unseen")

    def __init__(self, n_knots: int = 4, ridge: float = 1e-3, seed: int = 0, allow_unseen: bool = False):
        self.n_knots = n_knots
        self.ridge = ridge
        self.seed = seed
        self.allow_unseen = allow_unseen
        self.backbone = "location-scale-shash"

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.PARAMS}

    @property
    def covariates_(self) -> list[str]:
        return self.encoder_.categorical

    def fit(self, df: pd.DataFrame, age: str = "age", covariates: list[str] | tuple[str, ...] = (),
            idps: list[str] | None = None, idps_regex: str | None = None, progress: Progress | None = None,
            label: str = "training data") -> LocationScaleSHASH:
        """Fit every IDP independently on healthy controls (same validation as the diffusion model)."""
        start = time.perf_counter()
        covariates = list(covariates)
        data, idps, self.fit_warnings_ = prepare_training_table(df, age, covariates, idps, idps_regex, label)
        self.idps = idps
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
            if progress is not None:
                progress.update("fit", j + 1, len(idps))
        z = np.column_stack([shash_z(r[:, j], p) for j, p in enumerate(self.shash_)])
        self.z_correlation_ = np.corrcoef(z, rowvar=False).reshape(len(idps), len(idps)).tolist()
        self.history_ = {"fit_time_s": time.perf_counter() - start, "n_train": int(len(data))}
        self.training_summary_ = {"n_train": int(len(data)), "n_validation": 0,
                                  "age": {"min": float(a.min()), "max": float(a.max())},
                                  "idp_mean": {c: float(data[c].mean()) for c in idps},
                                  "idp_std": {c: float(data[c].std()) for c in idps}}
        return self

    # ------------------------------------------------------------------ exact distribution
    def _codes_of(self, df: pd.DataFrame, label: str) -> tuple[np.ndarray, np.ndarray]:
        return self.encoder_.ages(df, label), self.encoder_.codes(df, allow_unseen=self.allow_unseen, label=label)

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

    def cdf(self, y: np.ndarray, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Exact conditional CDF (n, D) of observations y (n, D) (mixture over marginalised levels)."""
        out = np.zeros_like(np.asarray(y, float))
        for c, w in self._level_combinations(codes):
            r = self.location_scale_.transform(y, age, c)
            z = np.column_stack([shash_z(r[:, j], p) for j, p in enumerate(self.shash_)])
            out += w[:, None] * special.ndtr(z)
        return out

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

    def predict_moments(self, df: pd.DataFrame, n_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and variance (n, D) at the rows' covariates (for EXPV, SMSE, MSLL)."""
        age, codes = self._codes_of(df, "table")
        codes = np.where(codes == MARGINALISE, 0, codes)
        mom = np.array([shash_moments(p) for p in self.shash_])  # (D, 2) on the standardised scale
        mu, sd = self.location_scale_.location_scale(age, codes)
        return mu + sd * mom[:, 0], (sd**2) * mom[:, 1]

    # ------------------------------------------------------------------ public API (as the diffusion model)
    def score(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
              progress: Progress | None = None, label: str = "table") -> pd.DataFrame:
        """Exact centiles and z-scores; same columns as :meth:`NormativeDiffusion.score` (``n_samples`` unused)."""
        missing = [c for c in self.idps if c not in df.columns]
        if missing:
            raise InputError(f"{label}: IDP column(s) missing: {', '.join(missing[:5])}")
        age, codes = self._codes_of(df, label)
        y = df[self.idps].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        if (np.isnan(y) & df[self.idps].notna().to_numpy()).any():
            raise InputError(f"{label}: IDP columns have non-numeric values")
        centile = np.clip(self.cdf(np.nan_to_num(y), age, codes), 1e-12, 1 - 1e-12)
        centile[np.isnan(y)] = np.nan
        z = special.ndtri(centile)
        corr = np.broadcast_to(np.asarray(self.z_correlation_), (len(df), len(self.idps), len(self.idps)))
        d2, mz = mahalanobis(z, corr)
        beyond = np.zeros_like(z, dtype=bool)
        return assemble_scores(df, self.idps, z, centile, d2, mz, beyond, self.encoder_.out_of_range(age))

    def centiles(self, ages, quantiles=(0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99), fixed: dict | None = None,
                 n_samples: int | None = None, idps: list[str] | None = None, seed: int | None = None,
                 progress: Progress | None = None) -> pd.DataFrame:
        """Exact centile curves in the long format of :meth:`NormativeDiffusion.centiles`."""
        fixed = dict(fixed or {})
        unknown = [k for k in fixed if k not in self.encoder_.categorical]
        if unknown:
            raise InputError(f"cannot fix {unknown}: categorical covariates are {self.encoder_.categorical}")
        ages = np.asarray(ages, float)
        codes = np.full((len(ages), len(self.encoder_.categorical)), MARGINALISE, dtype=np.int64)
        for k, col in enumerate(self.encoder_.categorical):
            if col in fixed:
                levels = self.encoder_.levels[col]
                if category_label(fixed[col]) not in levels:
                    raise InputError(f"--set {col}={fixed[col]}: level not seen in training (known: {levels[:10]})")
                codes[:, k] = levels.index(category_label(fixed[col]))
        names = idps or self.idps
        frames = []
        for q in quantiles:
            vals = self.quantile(float(q), ages, codes)
            for name in names:
                frame = {"age": ages, **{k: [v] * len(ages) for k, v in fixed.items()}}
                frame.update(idp=name, quantile=float(q), value=vals[:, self.idps.index(name)])
                frames.append(pd.DataFrame(frame))
        out = pd.concat(frames, ignore_index=True)
        return out.sort_values(["idp", "quantile", "age"], kind="stable").reset_index(drop=True)

    def sample(self, covariates: pd.DataFrame, n: int = 1, seed: int | None = None,
               progress: Progress | None = None) -> pd.DataFrame:
        """Independent draws per IDP (product of marginals) at each covariate row."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        age, codes = self._codes_of(covariates, "covariates")
        rep_age = np.repeat(age, n)
        rep_codes = self.encoder_.resolve_marginalised(np.repeat(codes, n, axis=0), rng)
        z = rng.standard_normal((len(rep_age), len(self.idps)))
        r = np.column_stack([shash_inverse(z[:, j], p) for j, p in enumerate(self.shash_)])
        values = self.location_scale_.inverse_transform(r, rep_age, rep_codes)
        cols = [self.encoder_.age, *self.encoder_.categorical]
        base = covariates[cols].loc[covariates.index.repeat(n)].reset_index(drop=True)
        base.insert(len(cols), "sample", np.tile(np.arange(n), len(covariates)))
        return pd.concat([base, pd.DataFrame(values, columns=self.idps)], axis=1)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        card = {"format": FORMAT, "format_version": 1, "params": self.get_params(), "idps": self.idps,
                "covariates": {"age": self.encoder_.age, "categorical": self.encoder_.categorical},
                "encoder": self.encoder_.to_dict(), "location_scale": self.location_scale_.to_dict(),
                "shash": self.shash_, "z_correlation": self.z_correlation_, "training": self.history_,
                "training_data": self.training_summary_, "fit_warnings": self.fit_warnings_,
                "versions": {"normcore": __version__}}
        # no weights: the file is kept so every model folder has the same two files
        return save_model_dir(path, {"empty": torch.zeros(0)}, card)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> LocationScaleSHASH:
        _, card = load_model_dir(path, FORMAT)
        model = cls(**card["params"])
        model.idps = card["idps"]
        model.encoder_ = CovariateEncoder.from_dict(card["encoder"])
        model.location_scale_ = LocationScale.from_dict(card["location_scale"])
        model.shash_ = card["shash"]
        model.z_correlation_ = card["z_correlation"]
        model.history_ = card["training"]
        model.training_summary_ = card["training_data"]
        model.fit_warnings_ = card["fit_warnings"]
        return model

