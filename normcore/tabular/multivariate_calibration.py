"""The multivariate score's distribution among new healthy people, fitted on rows the model was not fitted to.

Under the model, the squared Mahalanobis distance d2 = z' R^-1 z of a new healthy person over D IDPs is
chi-square with D degrees of freedom (:mod:`normcore.tabular.scoring`). That holds when the model's dependence is
the population's, as on a synthetic truth. On real data with many IDPs it is learnt from few people, and new people
depart from it more widely than it says: their d2 is centred near D but spread about twice as wide as chi-square,
so far more than 5% of healthy people land above its 95th centile (BENCHMARKS.md). The model's own training rows
cannot show this (they sit inside the dependence learnt from them).

:class:`MultivariateCalibration` is a scaled chi-square, d2 ~ a * chi2(nu) (a gamma distribution), fitted by maximum
likelihood to the d2 of rows the model was not fitted to: a diffusion model's validation split, scored on its
leave-one-out Gaussianised values, which neither the network nor the location-scale stage saw. ``multivariate_z``
is then Phi^-1 of that distribution function instead of chi2(D)'s, so it reads as a z among new healthy people. For
rows with only D' of the D IDPs observed the degrees of freedom scale to nu * D' / D (an approximation: the share
of the spread each IDP carries is taken as equal).

An exact baseline (the SHASH baseline, PCNtoolkit's BLR) scores d2 under one correlation of its training rows' z,
with no validation split. :func:`cross_fitted` gives it the same calibration from its training rows: each row's d2
under the correlation of the other folds' rows, which did not see it. Under their own in-sample correlation, most
healthy held-out fcon1000 subjects scored above chi2(208)'s 95th centile (BENCHMARKS.md, forty-ninth session).

d2 also depends on the number of samples M per covariate point: the correlation is estimated from them and shrunk
towards the identity by D / (M + D), so more samples give larger d2. The fit therefore scores the same rows with M
and with M / 2 samples. Their mean d2 settles as m(M) = m_inf - c / sqrt(M) (measured from 256 to 4000 samples to
within 1%: BENCHMARKS.md); the two means fix m_inf and c, and a score with another M scales ``a`` by
m(M') / m(M), M' taken within [M / 8, 8 M]. The gamma's shape (nu) hardly moves with M and is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import optimize, special

from normcore.tabular.scoring import MAX_MULTIVARIATE_IDPS, chi2_z, mahalanobis

CROSS_FIT_FOLDS = 10
"""Folds of :func:`cross_fitted`: each row's d2 is under a correlation of 90% of the rows."""
MIN_CALIBRATION_ROWS = 50
"""Fewer out-of-sample rows than this give no calibration (the chi-square reference is kept): the gamma's shape,
which sets the upper centiles, would be estimated to worse than about +-20%."""


@dataclass(frozen=True)
class MultivariateCalibration:
    """d2 over all ``n_idps`` IDPs ~ ``scale`` * chi2(``dof``), fitted on ``n_rows`` out-of-sample d2 computed with
    ``n_samples`` samples per covariate point; ``mean_d2`` and ``mean_d2_half`` are the mean of those d2 with
    ``n_samples`` and with half as many (how d2 moves with the number of samples). ``cross_fitted``: the rows are the
    training rows, cross-fitted (:func:`cross_fitted`), not a validation split."""

    scale: float
    dof: float
    n_idps: int
    n_rows: int
    n_samples: int
    mean_d2: float
    mean_d2_half: float
    cross_fitted: bool = False

    @classmethod
    def fit(cls, d2: np.ndarray, d2_half: np.ndarray, n_idps: int, n_samples: int,
            n_observed: np.ndarray | None = None) -> MultivariateCalibration | None:
        """Maximum-likelihood scaled chi-square of the finite, positive ``d2`` (the same rows' ``d2_half``, scored
        with ``n_samples // 2`` samples, give its dependence on M); None with fewer than
        :data:`MIN_CALIBRATION_ROWS` of them, or none spread (all equal).

        ``n_observed``: the IDPs each row's d2 is over (default: all ``n_idps``). A row over D' of them is taken as
        ``scale`` * chi2(``dof`` * D' / D), the rule :meth:`z` scores with, and the fit maximises that likelihood over
        the rows (so rows missing some IDPs calibrate too); the means that carry the dependence on M are of d2 * D / D'.
        """
        x, half = np.asarray(d2, float), np.asarray(d2_half, float)
        frac = np.ones(len(x)) if n_observed is None else np.asarray(n_observed, float) / n_idps
        ok = np.isfinite(x) & (x > 0) & np.isfinite(half) & (half > 0) & (frac > 0)
        x, half, frac = x[ok], half[ok], frac[ok]
        if len(x) < MIN_CALIBRATION_ROWS:
            return None
        shape = _gamma_shape(x) if np.all(frac == 1) else _gamma_shape_scaled(x, frac)
        if shape is None:
            return None
        theta = float(x.sum() / (shape * frac.sum()))  # gamma(shape, theta) = (theta / 2) * chi2(2 shape)
        return cls(scale=theta / 2, dof=2 * shape, n_idps=int(n_idps), n_rows=int(len(x)), n_samples=int(n_samples),
                   mean_d2=float((x / frac).mean()), mean_d2_half=float((half / frac).mean()))

    def scale_at(self, n_samples: int | None) -> float:
        """``scale`` for d2 computed with ``n_samples`` samples per point (None: the calibration's own)."""
        if n_samples is None or n_samples == self.n_samples:
            return self.scale
        m = float(np.clip(n_samples, self.n_samples / 8, self.n_samples * 8))
        full, half = 1 / np.sqrt(self.n_samples), 1 / np.sqrt(max(self.n_samples // 2, 1))
        c = (self.mean_d2 - self.mean_d2_half) / (half - full)  # m(M) = m_inf - c / sqrt(M) through both means
        mean = self.mean_d2 + c * (full - 1 / np.sqrt(m))
        return self.scale * max(mean, 0.25 * self.mean_d2) / self.mean_d2

    def z(self, d2: np.ndarray, n_observed: np.ndarray, n_samples: int | None = None) -> np.ndarray:
        """d2 of rows with ``n_observed`` IDPs, computed with ``n_samples`` samples per point (None: the
        calibration's), on a z scale (one-sided, large = atypical); NaN where d2 is."""
        d2 = np.asarray(d2, float)
        frac = np.asarray(n_observed, float) / self.n_idps
        k = np.maximum(self.dof * frac / 2, 1e-6)
        x = np.where(np.isfinite(d2), np.maximum(d2, 0.0), 0.0) / (2 * self.scale_at(n_samples))
        z = chi2_z(2 * x, 2 * k)  # a * chi2(nu) is chi2's at d2 / a; its smaller tail, so large d2 keep distinct z
        return np.where(np.isfinite(d2) & (frac > 0), z, np.nan)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MultivariateCalibration:
        """The calibration a card holds; TypeError where its numbers cannot be one (a damaged card)."""
        if not all(float(d[k]) > 0 for k in ("scale", "dof", "n_idps", "n_samples", "mean_d2", "mean_d2_half")):
            raise TypeError("multivariate_calibration: scale, dof, n_idps, n_samples and the means must be positive")
        return cls(scale=float(d["scale"]), dof=float(d["dof"]), n_idps=int(d["n_idps"]), n_rows=int(d["n_rows"]),
                   n_samples=int(d["n_samples"]), mean_d2=float(d["mean_d2"]), mean_d2_half=float(d["mean_d2_half"]),
                   cross_fitted=bool(d.get("cross_fitted", False)))

    def rows_text(self) -> str:
        """The rows it was fitted to, for a sentence: "the fit's 86 validation subjects" or "its 862 training
        subjects, cross-fitted"."""
        if self.cross_fitted:
            return f"its {self.n_rows} training subjects, cross-fitted"
        return f"the fit's {self.n_rows} validation subjects"

    def describe(self) -> str:
        """One line for a card or a summary."""
        rows = f"{self.n_rows} {'training rows, cross-fitted' if self.cross_fitted else 'out-of-sample rows'}"
        return (f"multivariate score calibrated on {rows}: d2 ~ {self.scale:.3g} x "
                f"chi2({self.dof:.1f}) over {self.n_idps} IDPs (chi2({self.n_idps}) under the model)")


def cross_fitted(z: np.ndarray, folds: int = CROSS_FIT_FOLDS, seed: int = 0) -> MultivariateCalibration | None:
    """The calibration of a multivariate score computed under one correlation of the training rows' z (n, D), from
    those rows: in each of ``folds`` random folds (drawn from ``seed``), the rows' d2 under the correlation of the
    other folds' complete rows, its scale corrected for those correlations being of fewer rows (BENCHMARKS.md,
    forty-ninth session). None where :meth:`MultivariateCalibration.fit` gives none, where D is over
    :data:`~normcore.tabular.scoring.MAX_MULTIVARIATE_IDPS`, or where a fold's correlation is singular (more IDPs
    than rows, or IDPs that are exact copies): the chi-square reference is kept. Its sample count is the number of
    rows, and it does not depend on one (an exact model draws no samples)."""
    z = np.asarray(z, float)
    n, d = z.shape
    if d > MAX_MULTIVARIATE_IDPS or n < MIN_CALIBRATION_ROWS:
        return None
    fold = np.random.default_rng(seed).permutation(n) % folds
    complete = np.isfinite(z).all(axis=1)
    d2 = np.full(n, np.nan)
    for k in range(folds):
        rest = z[(fold != k) & complete]
        corr = np.corrcoef(rest, rowvar=False).reshape(d, d)
        if len(rest) <= d or not np.isfinite(corr).all():
            return None
        try:
            d2[fold == k] = mahalanobis(z[fold == k], corr)[0]
        except np.linalg.LinAlgError:
            return None
    calibration = MultivariateCalibration.fit(d2, d2, d, n, n_observed=np.isfinite(z).sum(axis=1))
    if calibration is None:
        return None
    # a fold's correlation is of fewer rows than the one scores use, so its d2 run larger: by the ratio of the mean d2
    # of a new Gaussian row under a correlation of m rows, (m - 1) / (m - D - 2) (Hotelling's T^2), of the two counts
    rows, fold_rows = complete.sum(), complete.sum() * (folds - 1) / folds
    if fold_rows <= d + 2:
        return None
    ratio = ((rows - 1) / (rows - d - 2)) / ((fold_rows - 1) / (fold_rows - d - 2))
    return replace(calibration, scale=calibration.scale * float(ratio), cross_fitted=True)


def _gamma_shape(x: np.ndarray) -> float | None:
    """Maximum-likelihood shape of a gamma distribution (Minka's start, then Newton steps on
    log k - digamma(k) = log mean - mean log); None when the values do not vary."""
    s = float(np.log(x.mean()) - np.log(x).mean())
    if not s > 1e-12:
        return None
    k = (3 - s + np.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    for _ in range(6):
        k -= (np.log(k) - special.digamma(k) - s) / (1 / k - special.polygamma(1, k))
        k = max(k, 1e-6)
    return float(k)


def _gamma_shape_scaled(x: np.ndarray, frac: np.ndarray) -> float | None:
    """Maximum-likelihood k of x_i ~ gamma(k * frac_i, theta) with a common theta (profiled out: theta =
    sum x / (k sum frac)); None when the values do not vary."""
    if not np.ptp(np.log(x) - np.log(frac)) > 1e-9:
        return None
    log_x, total, weight = np.log(x), float(x.sum()), float(frac.sum())

    def negative_loglik(log_k: float) -> float:
        k = np.exp(log_k)
        theta = total / (k * weight)
        shapes = k * frac
        return -float(np.sum((shapes - 1) * log_x - shapes * np.log(theta) - special.gammaln(shapes)) - total / theta)

    start = np.log(_gamma_shape(x / frac) or 1.0)
    result = optimize.minimize_scalar(negative_loglik, bracket=(start - 0.5, start + 0.5))
    return float(np.exp(result.x)) if result.success and np.isfinite(result.x) else None
