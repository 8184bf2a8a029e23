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


def msll(y: np.ndarray, pred_mean: np.ndarray, pred_var: np.ndarray, train_mean: float, train_var: float) -> float:
    """Mean standardised log loss: Gaussian predictive log loss minus that of the trivial model
    N(train_mean, train_var); negative is better than the trivial model."""
    y, m, v = (np.asarray(a, float) for a in (y, pred_mean, pred_var))
    loss = 0.5 * np.log(2 * np.pi * v) + (y - m) ** 2 / (2 * v)
    trivial = 0.5 * np.log(2 * np.pi * train_var) + (y - train_mean) ** 2 / (2 * train_var)
    return float(np.mean(loss - trivial))


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
