"""Brain age: a ridge read-out of age from a scan's first-stage latent, and where its gap sits among healthy people.

The brain-age gap (predicted minus chronological age) is the field's standard whole-brain marker of diffuse
change: a brain that looks older than its years. Here the read-out is a ridge regression on the flattened
first-stage latent of the healthy training scans (features standardised, the penalty chosen by efficient
leave-one-out cross-validation). Two things make its gap usable as a normative score:

- *Cross-fitting.* The healthy reference gaps come from predictions of scans that were not in the regression that
  predicted them: K-fold out-of-fold predictions of the training scans, and the full read-out's predictions of the
  validation scans. No scan is its own reference, so the reference spread is the read-out's real held-out error.
- *Age-bias correction.* A shrunk regression over-predicts the young and under-predicts the old, so the raw gap
  falls with age. The linear dependence of the healthy reference gaps on age is removed from every gap (Smith et al.
  2019; de Lange & Cole 2020) before it is ranked, so a healthy scan's gap centile does not depend on its age.

The score is one-sided in its centile: ``centile`` near 1 means the brain looks older than nearly all healthy
people of its age; ``z`` keeps the sign.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import RidgeCV

from normcore._utils.errors import InputError
from normcore.imaging.anomaly import centile_among

ALPHAS = np.logspace(-2, 7, 37)
"""Ridge penalties searched (on standardised features; leave-one-out cross-validation picks one)."""
FOLDS = 5
"""Folds of the cross-fitted healthy reference."""
MIN_SCANS = 10
"""Fewest healthy training scans a read-out is fitted on."""


@dataclass
class BrainAge:
    """One scan's brain age.

    ``predicted_age``: the read-out (years). ``gap_years``: predicted minus stated age after the healthy age-bias
    correction (0 = as old as healthy people of its age look); ``raw_gap_years``: before it. ``z``: the corrected
    gap in units of the healthy reference's spread. ``centile`` (0..1): rank of the corrected gap among the
    ``n_reference`` cross-fitted healthy gaps (1 = looks older than all of them). ``reference_mae_years``: the
    read-out's mean absolute error on that reference, its precision on scans it was not fitted to.
    """

    predicted_age: float
    gap_years: float
    raw_gap_years: float
    z: float
    centile: float
    n_reference: int
    reference_mae_years: float

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """One line for a user: the predicted age, the gap and its rank among healthy people."""
        older = "older" if self.gap_years >= 0 else "younger"
        return (f"brain age {self.predicted_age:.0f} y: looks {abs(self.gap_years):.1f} y {older} than healthy "
                f"people of the same age (centile {100 * self.centile:.0f} among {self.n_reference} healthy scans; "
                f"the read-out's error on them is {self.reference_mae_years:.1f} y on average)")


def _ridge(features: np.ndarray, ages: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Feature mean and scale, ridge coefficients and intercept on standardised features, and the chosen penalty."""
    mean = features.mean(0)
    scale = features.std(0)
    # a feature that hardly varies among the training scans must not blow up when a new scan's value differs
    floor = 1e-2 * float(np.median(scale[scale > 0])) if (scale > 0).any() else 1.0
    scale = np.maximum(scale, floor)
    fitted = RidgeCV(alphas=ALPHAS).fit((features - mean) / scale, ages)
    return mean, scale, np.asarray(fitted.coef_, float), float(fitted.intercept_), float(fitted.alpha_)


class BrainAgeReadout:
    """Ridge brain age with a cross-fitted, age-bias-corrected healthy reference (see the module docstring)."""

    def __init__(self, folds: int = FOLDS, seed: int = 0):
        if int(folds) < 2:
            raise InputError(f"brain-age folds {folds!r}: at least 2")
        self.folds, self.seed = int(folds), int(seed)

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, features: np.ndarray, ages, val_features: np.ndarray | None = None,
            val_ages=None) -> BrainAgeReadout:
        """Fit the read-out on healthy training features (N, F) and ages, and build its healthy reference from
        out-of-fold predictions of those scans plus predictions of the healthy validation scans (when given)."""
        x, y = self._rows(features), np.asarray(ages, float)
        if len(x) != len(y):
            raise InputError(f"{len(x)} feature rows but {len(y)} ages")
        if len(y) < max(MIN_SCANS, self.folds):
            raise InputError(f"brain age needs at least {max(MIN_SCANS, self.folds)} healthy scans, got {len(y)}")
        self.mean_, self.scale_, self.coef_, self.intercept_, self.alpha_ = _ridge(x, y)
        fold = np.random.default_rng(self.seed).permutation(len(y)) % self.folds
        oof = np.empty(len(y))
        for k in range(self.folds):
            mean, scale, coef, intercept, _ = _ridge(x[fold != k], y[fold != k])
            oof[fold == k] = (x[fold == k] - mean) / scale @ coef + intercept
        ref_pred, ref_age = oof, y
        if val_features is not None and len(val_features):
            ref_pred = np.r_[oof, self.predict(val_features)]
            ref_age = np.r_[y, np.asarray(val_ages, float)]
        raw = ref_pred - ref_age
        self.bias_ = np.polyfit(ref_age, raw, 1)  # slope, intercept of the raw gap on age
        self.reference_gaps_ = raw - np.polyval(self.bias_, ref_age)
        self.reference_ages_ = ref_age
        self.reference_mae_ = float(np.abs(raw).mean())
        return self

    @staticmethod
    def _rows(features) -> np.ndarray:
        x = np.asarray(features, float)
        return x.reshape(len(x), -1)

    # ------------------------------------------------------------------------------------- inference
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted ages of feature rows (N, ...) flattened like the training rows."""
        x = self._rows(features)
        if x.shape[1] != self.coef_.size:
            raise InputError(f"brain age: {x.shape[1]} features per scan, the read-out was fitted on {self.coef_.size}")
        return (x - self.mean_) / self.scale_ @ self.coef_ + self.intercept_

    def score(self, features: np.ndarray, ages) -> list[BrainAge]:
        """Brain age, corrected gap, z and healthy centile of each scan (see :class:`BrainAge`)."""
        pred, ages = self.predict(features), np.atleast_1d(np.asarray(ages, float))
        raw = pred - ages
        gaps = raw - np.polyval(self.bias_, ages)
        sd = float(self.reference_gaps_.std(ddof=1))
        return [BrainAge(float(p), float(g), float(r), float(g / sd), centile_among(g, self.reference_gaps_) / 100.0,
                         int(self.reference_gaps_.size), round(self.reference_mae_, 2))
                for p, g, r in zip(pred, gaps, raw, strict=True)]

    # ----------------------------------------------------------------------------------- persistence
    def to_arrays(self, prefix: str = "brain_age.") -> dict[str, np.ndarray]:
        """The fitted read-out as plain arrays (for safetensors)."""
        return {f"{prefix}{k}": np.asarray(v, np.float64) for k, v in (
            ("mean", self.mean_), ("scale", self.scale_), ("coef", self.coef_), ("intercept", [self.intercept_]),
            ("alpha", [self.alpha_]), ("bias", self.bias_), ("reference_gaps", self.reference_gaps_),
            ("reference_ages", self.reference_ages_), ("reference_mae", [self.reference_mae_]),
            ("folds", [self.folds]), ("seed", [self.seed]))}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "brain_age.") -> BrainAgeReadout | None:
        """A read-out from :meth:`to_arrays`'s arrays; None when they hold none (a model saved before it existed)."""
        if f"{prefix}coef" not in arrays:
            return None
        a = {k[len(prefix):]: np.asarray(v, float) for k, v in arrays.items() if k.startswith(prefix)}
        try:
            out = cls(int(a["folds"][0]), int(a["seed"][0]))
            out.mean_, out.scale_, out.coef_ = a["mean"], a["scale"], a["coef"]
            out.intercept_, out.alpha_ = float(a["intercept"][0]), float(a["alpha"][0])
            out.bias_, out.reference_gaps_, out.reference_ages_ = a["bias"], a["reference_gaps"], a["reference_ages"]
            out.reference_mae_ = float(a["reference_mae"][0])
        except KeyError as exc:
            raise InputError(f"the brain-age read-out is incomplete (no {exc})") from None
        return out
