"""Deviation scores from model samples: randomised PIT centiles, z-scores, multivariate score.

Given M samples of the IDP vector at a subject's covariates (sorted per IDP) and the subject's
observed vector, the centile of IDP j is the randomised probability integral transform

    u = (#{s < y} + V * (#{s == y} + 1)) / (M + 1),   V ~ U(0, 1),

and z = Phi^{-1}(u). When the observation lies beyond all M samples, u is clipped to
0.5 / (M + 1) (or 1 - 0.5 / (M + 1)): the model cannot resolve centiles finer than its sample count,
so |z| saturates at Phi^{-1}(1 - 0.5 / (M + 1)) (3.29 for M = 1000); such entries are counted in
``n_beyond_samples``. Increase M to resolve more extreme deviations.

The multivariate score is the squared Mahalanobis distance d2 = z' R^{-1} z, where R is the
correlation of the model's own normal scores at the subject's covariates (estimated from the same
M samples, shrunk towards the identity by lambda = D / (M + D)). Under the model d2 ~ chi2(D), and
``multivariate_z`` = Phi^{-1}(chi2_D.cdf(d2)) puts it on a z scale (one-sided: large = atypical).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import special, stats


def randomised_pit(sorted_samples: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centiles u (n, D) and a beyond-samples mask from per-subject sorted samples (n, D, M) and y (n, D)."""
    m = sorted_samples.shape[-1]
    q = y.unsqueeze(-1).contiguous()
    below = torch.searchsorted(sorted_samples, q, right=False).squeeze(-1)
    not_above = torch.searchsorted(sorted_samples, q, right=True).squeeze(-1)
    ties = (not_above - below).double()
    u = (below.double() + v * (ties + 1)) / (m + 1)
    beyond = (not_above == 0) | (below == m)
    lo, hi = 0.5 / (m + 1), 1 - 0.5 / (m + 1)
    u = torch.where(not_above == 0, torch.full_like(u, lo), u)
    u = torch.where(below == m, torch.full_like(u, hi), u)
    return u, beyond


def normal_scores(samples: torch.Tensor) -> torch.Tensor:
    """Rank-based normal scores of samples (n, M, D) within each (n, ., D) slice."""
    m = samples.shape[1]
    ranks = samples.argsort(dim=1).argsort(dim=1).double()
    return torch.from_numpy(special.ndtri(((ranks + 0.5) / m).numpy()))


def copula_correlation(samples: torch.Tensor) -> torch.Tensor:
    """Per-condition Gaussian-copula correlation (n, D, D) from samples (n, M, D), shrunk to identity."""
    n, m, d = samples.shape
    s = normal_scores(samples)
    s = s - s.mean(dim=1, keepdim=True)
    cov = s.transpose(1, 2) @ s / m
    sd = cov.diagonal(dim1=1, dim2=2).clamp(min=1e-12).sqrt()
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    lam = d / (m + d)
    return (1 - lam) * corr + lam * torch.eye(d, dtype=corr.dtype)


def mahalanobis(z: np.ndarray, corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared Mahalanobis distance of z (n, D) under per-row correlations (n, D, D), and its z scale.

    Missing entries of z (NaN) are left out: the distance uses the observed sub-vector and its
    correlation block, with the chi-square degrees of freedom reduced to match.
    """
    z = np.asarray(z, float)
    corr = np.asarray(corr, float)
    n, d = z.shape
    d2 = np.full(n, np.nan)
    dof = np.full(n, float(d))
    complete = ~np.isnan(z).any(axis=1)
    if complete.any():
        sol = np.linalg.solve(corr[complete], z[complete][..., None])[..., 0]
        d2[complete] = (z[complete] * sol).sum(axis=1)
    for i in np.flatnonzero(~complete):  # rare: rows with missing IDPs
        obs = ~np.isnan(z[i])
        if obs.any():
            sub = corr[i][np.ix_(obs, obs)]
            d2[i] = float(z[i, obs] @ np.linalg.solve(sub, z[i, obs]))
            dof[i] = obs.sum()
    p = stats.chi2.cdf(d2, dof)
    mz = special.ndtri(np.clip(p, 1e-300, 1 - 1e-16))
    return d2, mz


def assemble_scores(df, idps: list[str], z: np.ndarray, centile: np.ndarray, d2: np.ndarray, mz: np.ndarray,
                    beyond: np.ndarray, out_of_range: np.ndarray):
    """The public score table: input columns, then z:/centile: per IDP, then the subject-level columns."""
    import pandas as pd

    extra = {}
    for j, name in enumerate(idps):
        extra[f"z:{name}"] = z[:, j]
        extra[f"centile:{name}"] = centile[:, j]
    extra["multivariate_d2"] = d2
    extra["multivariate_z"] = mz
    extra["n_beyond_samples"] = beyond.sum(axis=1)
    extra["out_of_range"] = out_of_range
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
