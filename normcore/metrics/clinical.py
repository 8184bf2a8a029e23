"""Clinical separation of patients from controls by deviation scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def _auc_rows(score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``score`` (B, n) against the boolean labels ``positive`` (B, n): the Mann-Whitney
    statistic with mid-ranks, so ties count one half (as :func:`sklearn.metrics.roc_auc_score`)."""
    ranks = stats.rankdata(score, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    u = (ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def auc_with_ci(score: np.ndarray, is_patient: np.ndarray, n_boot: int = 1000, seed: int = 0,
                level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC of ``score`` for patients vs controls and a percentile bootstrap CI (stratified: each resample keeps
    the numbers of patients and controls). Non-finite scores are left out; ValueError without both groups.

    The bootstrap is computed in blocks of resamples at once (ranks per resample), not one sklearn call per
    resample: a page's separation table is interactive."""
    score, y = np.asarray(score, float), np.asarray(is_patient, bool)
    ok = np.isfinite(score)
    score, y = score[ok], y[ok]
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("the AUC needs both patients and controls with a finite score")
    auc = float(_auc_rows(score[None], y[None])[0])
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    block = max(1, 2_000_000 // labels.size)  # resamples per block: a few tens of MB at most
    boots = []
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = np.concatenate([rng.choice(pos, (b, pos.size)), rng.choice(neg, (b, neg.size))], axis=1)
        boots.append(_auc_rows(score[idx], np.broadcast_to(labels, idx.shape)))
    lo, hi = np.quantile(np.concatenate(boots), [(1 - level) / 2, 1 - (1 - level) / 2])
    return auc, float(lo), float(hi)


def cohen_d(patients: np.ndarray, controls: np.ndarray) -> tuple[float, float, float]:
    """Cohen's d of patients minus controls with the pooled SD (each group's variance weighted by its degrees of
    freedom) and its approximate 95% CI, SE = sqrt((n1 + n2) / (n1 n2) + d^2 / (2 (n1 + n2))). Non-finite values
    are left out; NaN for all three with fewer than two values in a group or no spread."""
    p, c = np.asarray(patients, float), np.asarray(controls, float)
    p, c = p[np.isfinite(p)], c[np.isfinite(c)]
    n1, n2 = len(p), len(c)
    if n1 < 2 or n2 < 2:
        return np.nan, np.nan, np.nan
    pooled = np.sqrt(((n1 - 1) * p.var(ddof=1) + (n2 - 1) * c.var(ddof=1)) / (n1 + n2 - 2))
    if not pooled > 0:
        return np.nan, np.nan, np.nan
    d = float((p.mean() - c.mean()) / pooled)
    se = np.sqrt((n1 + n2) / (n1 * n2) + d**2 / (2 * (n1 + n2)))
    return d, d - 1.96 * se, d + 1.96 * se


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
    """AUC (with CI), Cohen's d (:func:`cohen_d`, patients minus controls) and Welch t for per-IDP |z| and for
    subject-level summaries of a score table, one row per score."""
    z = scores[[f"z:{i}" for i in idps]].to_numpy(float)
    summaries = {
        "mean_abs_z": np.nanmean(np.abs(z), axis=1),
        "count_abs_z_gt_1.96": (np.abs(z) > 1.96).sum(axis=1).astype(float),
        "top5pct_abs_z": top_k_mean_abs(z, 0.05),
    }
    if "multivariate_d2" in scores:
        summaries["multivariate_d2"] = scores["multivariate_d2"].to_numpy(float)
    summaries.update({f"abs_z:{i}": np.abs(z[:, j]) for j, i in enumerate(idps)})
    is_patient = np.asarray(is_patient, bool)
    rows = []
    for name, s in summaries.items():
        auc, lo, hi = auc_with_ci(s, is_patient, n_boot, seed)
        t, p = welch_t(s, is_patient)
        d = cohen_d(s[is_patient], s[~is_patient])[0]
        rows.append({"score": name, "auc": auc, "auc_lo": lo, "auc_hi": hi, "welch_t": t, "welch_p": p,
                     "cohen_d": d})
    return pd.DataFrame(rows)
