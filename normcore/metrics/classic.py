"""Classic normative-model metrics, defined as in PCNtoolkit (EXPV, SMSE, MSLL, Rho) plus z summaries."""

from __future__ import annotations

import numpy as np
from scipy import stats


def explained_variance(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - var(y - pred) / var(y); NaN where y does not vary (a measure all 0 in the scored rows)."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    var_y = np.var(y)
    return float(1 - np.var(y - pred) / var_y) if var_y > 0 else float("nan")


def smse(y: np.ndarray, pred: np.ndarray) -> float:
    """Standardised mean squared error: mean((y - pred)^2) / var(y); NaN where y does not vary."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    var_y = np.var(y)
    return float(np.mean((y - pred) ** 2) / var_y) if var_y > 0 else float("nan")


def gaussian_log_loss(y: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Each value's negative log density under N(mean, var)."""
    y, m, v = (np.asarray(a, float) for a in (y, mean, var))
    return 0.5 * np.log(2 * np.pi * v) + (y - m) ** 2 / (2 * v)


def msll(y: np.ndarray, pred_mean: np.ndarray, pred_var: np.ndarray, train_mean: float, train_var: float) -> float:
    """Mean standardised log loss: Gaussian predictive log loss minus that of the trivial model
    N(train_mean, train_var); negative is better than the trivial model."""
    return float(np.mean(gaussian_log_loss(y, pred_mean, pred_var) - gaussian_log_loss(y, train_mean, train_var)))


def point_mass_log_loss(y: np.ndarray, floor: float, ceiling: float, p_floor: np.ndarray, p_ceiling: np.ndarray,
                        body_mean: np.ndarray, body_var: np.ndarray) -> np.ndarray:
    """Each value's negative log predictive probability under a mixture of point masses and a Gaussian body:
    -log ``p_floor`` at (or below) the floor, -log ``p_ceiling`` at (or above) the ceiling (NaN bounds: none), and
    between them -log(1 - p_floor - p_ceiling) plus the Gaussian log loss under N(``body_mean``, ``body_var``).

    The dominating measure counts the bounds and is Lebesgue between them, so the difference of two such losses
    (a model's and a trivial one's, as in :func:`msll`) is a log ratio of probabilities at the bounds and of
    densities between them: comparable across IDPs, where a Gaussian log loss at a measure that is 0 for most
    people is dominated by its few values off 0. Shares must lie in (0, 1) for the values they meet."""
    y = np.asarray(y, float)
    p_floor, p_ceiling = np.asarray(p_floor, float), np.asarray(p_ceiling, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = -np.log1p(-(p_floor + p_ceiling)) + gaussian_log_loss(y, body_mean, body_var)
        return np.where(y <= floor, -np.log(p_floor), np.where(y >= ceiling, -np.log(p_ceiling), between))


def pearson_rho(y: np.ndarray, pred: np.ndarray) -> float:
    """Pearson correlation of y and pred; NaN where either does not vary."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    if np.std(y) == 0 or np.std(pred) == 0:
        return float("nan")
    return float(stats.pearsonr(y, pred)[0])


def z_summary(z: np.ndarray) -> dict[str, float]:
    """Mean, SD, skew, excess kurtosis and the share |z| > 1.96 (healthy controls: 0, 1, 0, 0, 0.05)."""
    z = np.asarray(z, float)
    z = z[np.isfinite(z)]
    return {"z_mean": float(z.mean()), "z_sd": float(z.std(ddof=1)), "z_skew": float(stats.skew(z)),
            "z_kurtosis": float(stats.kurtosis(z)), "frac_abs_z_gt_1.96": float(np.mean(np.abs(z) > 1.96))}
