"""Calibration of centiles: absolute centile error, coverage, PIT uniformity, two-sample KS by age band."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def ace_against_truth(model_quantiles: np.ndarray, true_cdf_at_quantiles: np.ndarray) -> float:
    """ACE with a known truth: mean |F_true(Q_hat(q | c) | c) - q|.

    ``model_quantiles`` holds the levels q (any shape) and ``true_cdf_at_quantiles`` the exact CDF
    evaluated at the model's q-quantiles, same shape.
    """
    return float(np.mean(np.abs(np.asarray(true_cdf_at_quantiles, float) - np.asarray(model_quantiles, float))))


def ace_heldout(curves: pd.DataFrame, heldout: pd.DataFrame, age: str, idp: str, bin_width: float = 10.0,
                min_per_bin: int = 20) -> float:
    """ACE on real data: per age bin, the share of held-out controls below the model's q-quantile vs q.

    ``curves`` is the long centile table (age, idp, quantile, value) on a fine age grid; each held-out
    subject is compared with the model quantile at its own age (linear interpolation on the grid).
    Returns the mean |p_hat - q| over bins with at least ``min_per_bin`` subjects and all quantiles.
    """
    cur = curves[curves["idp"] == idp]
    held = heldout[[age, idp]].dropna()
    below = {}
    for q, grp in cur.groupby("quantile"):
        grp = grp.sort_values("age")
        thresh = np.interp(held[age].to_numpy(), grp["age"].to_numpy(), grp["value"].to_numpy())
        below[q] = held[idp].to_numpy() < thresh
    bins = np.floor(held[age].to_numpy() / bin_width)
    errs = []
    for b in np.unique(bins):
        sel = bins == b
        if sel.sum() < min_per_bin:
            continue
        errs.extend(abs(below[q][sel].mean() - q) for q in below)
    return float(np.mean(errs)) if errs else float("nan")


def coverage(centiles: np.ndarray, levels: tuple[float, ...] = (0.5, 0.9, 0.95)) -> pd.DataFrame:
    """Share of centiles inside each central interval, with the binomial standard error sqrt(a(1-a)/n)."""
    u = np.asarray(centiles, float)
    u = u[~np.isnan(u)]
    rows = []
    for a in levels:
        lo, hi = (1 - a) / 2, 1 - (1 - a) / 2
        rows.append({"level": a, "coverage": float(np.mean((u > lo) & (u < hi))) if u.size else np.nan,
                     "se": float(np.sqrt(a * (1 - a) / max(u.size, 1))), "n": int(u.size)})
    return pd.DataFrame(rows)


def pit_ks(centiles: np.ndarray) -> tuple[float, float]:
    """KS statistic and p-value of PIT values against U(0, 1)."""
    u = np.asarray(centiles, float)
    res = stats.kstest(u[~np.isnan(u)], "uniform")
    return float(res.statistic), float(res.pvalue)


def benjamini_hochberg(pvalues: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Boolean rejections under the Benjamini-Hochberg false discovery rate procedure."""
    p = np.asarray(pvalues, float)
    return stats.false_discovery_control(p, method="bh") <= alpha if p.size else np.zeros(0, bool)


def ks_by_age_band(real: pd.DataFrame, generated: pd.DataFrame, age: str, idps: list[str],
                   bands: list[tuple[float, float]], alpha: float = 0.05) -> pd.DataFrame:
    """Two-sample KS test per IDP and age band between real and generated rows, with BH correction."""
    rows = []
    for lo, hi in bands:
        r = real[(real[age] >= lo) & (real[age] < hi)]
        g = generated[(generated[age] >= lo) & (generated[age] < hi)]
        if len(r) < 5 or len(g) < 5:
            continue
        for idp in idps:
            res = stats.ks_2samp(r[idp].dropna(), g[idp].dropna())
            rows.append({"band": f"{lo:g}-{hi:g}", "idp": idp, "n_real": len(r), "ks": float(res.statistic),
                         "p": float(res.pvalue)})
    out = pd.DataFrame(rows, columns=["band", "idp", "n_real", "ks", "p"])
    out["reject_bh"] = benjamini_hochberg(out["p"].to_numpy(), alpha) if len(out) else []
    return out


ACE_LEVELS = tuple(np.linspace(0.02, 0.98, 25).round(3))


def ace_from_centiles(centiles: np.ndarray, ages: np.ndarray, quantiles: tuple[float, ...] = ACE_LEVELS,
                      bin_width: float = 10.0, min_per_bin: int = 20) -> float:
    """Held-out ACE from subjects' own centiles: per age bin, mean over q of |share(u < q) - q|.

    Equivalent to locating the model's q-quantile at each subject's own covariates in the held-out
    controls' distribution (u < q exactly when y is below that quantile).
    """
    u, a = np.asarray(centiles, float), np.asarray(ages, float)
    ok = ~np.isnan(u)
    u, a = u[ok], a[ok]
    bins = np.floor(a / bin_width)
    errs = [abs(np.mean(u[bins == b] < q) - q) for b in np.unique(bins) if (bins == b).sum() >= min_per_bin
            for q in quantiles]
    return float(np.mean(errs)) if errs else float("nan")
