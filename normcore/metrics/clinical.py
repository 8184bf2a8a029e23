"""Clinical separation of patients from controls by deviation scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score


def auc_with_ci(score: np.ndarray, is_patient: np.ndarray, n_boot: int = 1000, seed: int = 0,
                level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC of ``score`` for patients vs controls and a percentile bootstrap CI (stratified)."""
    score, y = np.asarray(score, float), np.asarray(is_patient, bool)
    ok = np.isfinite(score)
    score, y = score[ok], y[ok]
    auc = float(roc_auc_score(y, score))
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        boots[b] = roc_auc_score(y[idx], score[idx])
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return auc, float(lo), float(hi)


def welch_t(score: np.ndarray, is_patient: np.ndarray) -> tuple[float, float]:
    """Welch's unequal-variance t statistic (patients minus controls) and two-sided p-value."""
    score, y = np.asarray(score, float), np.asarray(is_patient, bool)
    res = stats.ttest_ind(score[y], score[~y], equal_var=False, nan_policy="omit")
    return float(res.statistic), float(res.pvalue)


def top_k_mean_abs(z: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Extreme-value summary per row: mean of the top ``fraction`` of |z| (at least one value)."""
    a = np.sort(np.abs(np.asarray(z, float)), axis=1)[:, ::-1]
    k = max(1, int(np.ceil(fraction * a.shape[1])))
    return np.nanmean(a[:, :k], axis=1)


def separation_table(scores: pd.DataFrame, idps: list[str], is_patient: np.ndarray, n_boot: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """AUC (with CI) and Welch t for per-IDP |z| and for subject-level summaries of a score table."""
    z = scores[[f"z:{i}" for i in idps]].to_numpy(float)
    summaries = {
        "mean_abs_z": np.nanmean(np.abs(z), axis=1),
        "count_abs_z_gt_1.96": (np.abs(z) > 1.96).sum(axis=1).astype(float),
        "top5pct_abs_z": top_k_mean_abs(z, 0.05),
    }
    if "multivariate_d2" in scores:
        summaries["multivariate_d2"] = scores["multivariate_d2"].to_numpy(float)
    summaries.update({f"abs_z:{i}": np.abs(z[:, j]) for j, i in enumerate(idps)})
    rows = []
    for name, s in summaries.items():
        auc, lo, hi = auc_with_ci(s, is_patient, n_boot, seed)
        t, p = welch_t(s, is_patient)
        rows.append({"score": name, "auc": auc, "auc_lo": lo, "auc_hi": hi, "welch_t": t, "welch_p": p})
    return pd.DataFrame(rows)
