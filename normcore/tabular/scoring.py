"""Deviation scores from model samples: randomised PIT centiles, z-scores, multivariate score.

Given M samples of the IDP vector at a subject's covariates (sorted per IDP) and the subject's
observed vector, the centile of IDP j is the randomised probability integral transform

    u = (#{s < y} + V * (#{s == y} + 1)) / (M + 1),   V ~ U(0, 1),

and z = Phi^{-1}(u). The sample ranks cannot resolve centiles finer than 1 / (M + 1), so values in the outer
tails are scored by a tail model instead (:func:`tail_z`, used by the diffusion model): beyond the k-th most
extreme sample on either side (k = ``TAIL_SHARE`` x M), z is extrapolated from a normal tail fitted to that
side's order statistics on the model's Gaussianised scale (or the residual scale: ``TAIL_SCALES``), anchored at the
k-th sample so z is continuous where the randomised PIT hands over. Entries beyond all M samples are counted in
``n_beyond_samples`` (their z is extrapolated). Models without a tail model clip u to 0.5 / (M + 1) there, so |z|
saturates at Phi^{-1}(1 - 0.5 / (M + 1)) (3.29 for M = 1000).

The multivariate score is the squared Mahalanobis distance d2 = z' R^{-1} z, where R is the
correlation of the model's own normal scores at the subject's covariates (estimated from the same
M samples, shrunk towards the identity by lambda = D / (M + D)). Under the model d2 ~ chi2(D), and
``multivariate_z`` = Phi^{-1}(chi2_D.cdf(d2)) puts it on a z scale (one-sided: large = atypical).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import special, stats


def randomised_pit(sorted_samples: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
                   at_floor: torch.Tensor | None = None, at_ceiling: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Centiles u (n, D) and a beyond-samples mask from per-subject sorted samples (n, D, M) and y (n, D).

    ``at_floor`` / ``at_ceiling`` (n, D): values at their measure's floor or ceiling
    (:mod:`~normcore.tabular.point_masses`), which tie with every sample beyond them (censored there)."""
    m = sorted_samples.shape[-1]
    q = y.unsqueeze(-1).contiguous()
    below = torch.searchsorted(sorted_samples, q, right=False).squeeze(-1)
    not_above = torch.searchsorted(sorted_samples, q, right=True).squeeze(-1)
    if at_floor is not None:
        below = torch.where(at_floor, torch.zeros_like(below), below)
    if at_ceiling is not None:
        not_above = torch.where(at_ceiling, torch.full_like(not_above, m), not_above)
    ties = (not_above - below).double()
    u = (below.double() + v * (ties + 1)) / (m + 1)
    beyond = (not_above == 0) | (below == m)
    lo, hi = 0.5 / (m + 1), 1 - 0.5 / (m + 1)
    u = torch.where(not_above == 0, torch.full_like(u, lo), u)
    u = torch.where(below == m, torch.full_like(u, hi), u)
    return u, beyond


TAIL_SHARE = 0.01
"""Share of the samples on each side beyond which a value's z comes from the tail model (k = 10 of 1000)."""
TAIL_FIT_POINTS = 16
"""Order statistics per side, from the fit's start (``TAIL_FIT_FROM``) to the anchor, to which the normal tail is
fitted."""
TAIL_SCALES = ("gaussianised", "residual")
"""Scales on which the diffusion model's normal tail may be fitted (its ``tail_scale`` parameter): ``"gaussianised"``
(the default: the scale it samples on, the location-scale residual through the per-IDP quantile transform, which
carries the training marginal's tail weight) or ``"residual"`` (the location-scale residual itself, affine in IDP
units at a covariate point: for measures whose conditional tails are light, normal-like in IDP units)."""
TAIL_FIT_FROM = {"gaussianised": 0.5, "residual": 0.25}
"""Per tail scale, the share of the samples (from either end) where the tail fit starts: 0.5 = the median. Chosen
by measurement (BENCHMARKS.md, tails): on the residual scale the outer quarter extrapolates better."""


def tail_ranks(m: int, fit_from: float = TAIL_FIT_FROM["gaussianised"]) -> tuple[int, np.ndarray, np.ndarray]:
    """For M samples: the anchor rank k (1-based, from either end) and the 0-based order-statistic indices of the
    lower and upper tail fits (each from the anchor inwards to ``fit_from`` of the samples, ``TAIL_FIT_POINTS`` at
    most). ``TAIL_SHARE`` = 0 turns the tail model off (k = 0: z saturates at the sample resolution, as before)."""
    if TAIL_SHARE <= 0:
        return 0, np.zeros(0, int), np.zeros(0, int)
    k = max(1, int(round(TAIL_SHARE * m)))
    inner = max(k - 1, min((m - 1) // 2, int(round(fit_from * m)) - 1))
    lower = np.unique(np.linspace(k - 1, inner, TAIL_FIT_POINTS).round().astype(int))
    return k, lower, (m - 1 - lower)[::-1]


def tail_z(latent_order: np.ndarray, ranks: np.ndarray, m: int, x: np.ndarray, upper: bool) -> np.ndarray:
    """z of values ``x`` (n,) beyond a tail anchor, from order statistics on one increasing scale.

    ``latent_order`` (n, J) are the order statistics, on the same scale as ``x``, at 0-based ascending ``ranks`` (J,)
    of the M samples at each value's covariates, the anchor (the k-th from the end of the side) first for the lower
    tail and last for the upper tail; their plotting positions (rank + 1) / (M + 1) give normal scores q. A line
    value = a + b q is fitted by least squares (b: the tail's scale), and z = q_anchor + (x - value_anchor) / b:
    continuous with the randomised PIT at the anchor, linear in the value beyond it (exact when the conditional's
    tail on that scale is normal). A degenerate fit (b <= 0) gives z = q_anchor.
    """
    q = special.ndtri((np.asarray(ranks, float) + 1) / (m + 1))
    lo = np.asarray(latent_order, float)
    qc = q - q.mean()
    denom = float((qc**2).sum())
    b = ((lo - lo.mean(axis=1, keepdims=True)) * qc).sum(axis=1) / denom if denom > 0 else np.zeros(len(lo))
    anchor = 0 if not upper else len(ranks) - 1
    ok = b > 1e-12
    z = q[anchor] + np.where(ok, (x - lo[:, anchor]) / np.where(ok, b, 1.0), 0.0)
    return np.minimum(z, q[anchor]) if not upper else np.maximum(z, q[anchor])


def mixture_z(z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """z of values under the mixture sum_k w_k F_k, from their z under each component: ``z`` (K, ...) and
    ``weights`` (K, ...; summing to 1 over K, broadcast against ``z``).

    z is taken from the smaller tail, each tail mixed on its own (Phi(z) below the median, Phi(-z) above) and in
    logarithms, so that extreme z keep their precision where a centile would round to 0 or 1, and stay finite where
    Phi(z) itself underflows (|z| beyond about 38)."""
    z, weights = np.broadcast_arrays(np.asarray(z, float), np.asarray(weights, float))
    with np.errstate(divide="ignore"):  # a weight of 0 is a log weight of -inf: that component adds nothing
        log_w = np.log(weights)
    lower = special.logsumexp(log_w + special.log_ndtr(z), axis=0)
    upper = special.logsumexp(log_w + special.log_ndtr(-z), axis=0)
    return np.where(lower <= upper, special.ndtri_exp(lower), -special.ndtri_exp(upper))


def mix_scores(u_a: np.ndarray, z_a: np.ndarray, u_b: np.ndarray, z_b: np.ndarray,
               w_b: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Centile and z of values under the mixture (1 - w_b) F_a + w_b F_b, from their centiles and z under each:
    the centile mixes linearly, z as :func:`mixture_z` mixes it."""
    w_b = np.asarray(w_b, float)
    return (1.0 - w_b) * u_a + w_b * u_b, mixture_z(np.stack(np.broadcast_arrays(z_a, z_b)),
                                                     np.stack(np.broadcast_arrays(1.0 - w_b, w_b)))


def normal_scores(samples: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
    """Rank-based normal scores Phi^-1((rank + 0.5) / M) of samples (n, M, D) within each (n, ., D) slice (float64).

    One sort per slice along its contiguous axis (or ``order``, the (n, D, M) indices of a sort already done), then
    the M normal scores are scattered to the sorted positions."""
    m = samples.shape[1]
    if order is None:
        order = samples.transpose(1, 2).argsort(dim=-1)  # (n, D, M)
    scores = torch.from_numpy(special.ndtri((np.arange(m) + 0.5) / m)).to(order.device)
    out = torch.empty(order.shape, dtype=torch.float64, device=order.device)
    out.scatter_(-1, order, scores.expand(order.shape))
    return out.transpose(1, 2)


def copula_correlation(samples: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
    """Per-condition Gaussian-copula correlation (n, D, D) from samples (n, M, D), shrunk to identity (``order``:
    as :func:`normal_scores`)."""
    n, m, d = samples.shape
    s = normal_scores(samples, order)
    s = s - s.mean(dim=1, keepdim=True)
    cov = s.transpose(1, 2) @ s / m
    sd = cov.diagonal(dim1=1, dim2=2).clamp(min=1e-12).sqrt()
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    lam = d / (m + d)
    return (1 - lam) * corr + lam * torch.eye(d, dtype=corr.dtype)


MAX_MULTIVARIATE_IDPS = 5000
"""Above this many IDPs no multivariate score is computed (one D x D correlation alone would take over
200 MB, and with the default 1000 samples per point it would be mostly shrinkage): the columns are NaN."""


@dataclass
class PointCorrelations:
    """Correlations (U, D, D) estimated at U distinct covariate points and each row's point (n,); ``None``
    for no multivariate score. ``note`` says what a user should know of it (e.g. a memory-bound pooling)."""

    per_point: np.ndarray | None
    inverse: np.ndarray
    note: str | None = None


RowCorrelations = np.ndarray | PointCorrelations | None
"""What a model's score core gives for the multivariate score: one (D, D) matrix for every row, one per row
(n, D, D), one per distinct covariate point, or None (no multivariate score)."""


def multivariate_scores(z: np.ndarray, corr: RowCorrelations, keep: np.ndarray,
                        rows_per_chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """d2 and its z scale (:func:`mahalanobis`) on the IDPs ``keep`` of ``z`` (n, D).

    One shared (D, D) correlation, and each distinct point's correlation, is factorised once per pattern of
    observed IDPs and solved for all the rows that use it (cost U x D^3 + n x D^2 for U points); per-row
    correlations (n, D, D) are taken in chunks of ``rows_per_chunk`` rows, so that few D x D matrices exist at
    once. Above ``MAX_MULTIVARIATE_IDPS`` IDPs the result is NaN.
    """
    n = len(z)
    d2, mz = np.full(n, np.nan), np.full(n, np.nan)
    if corr is None or not keep.any() or keep.sum() > MAX_MULTIVARIATE_IDPS or \
            (isinstance(corr, PointCorrelations) and corr.per_point is None):
        return d2, mz
    zk = z[:, keep]
    if isinstance(corr, PointCorrelations):
        inverse = np.asarray(corr.inverse)
        order = np.argsort(inverse, kind="stable")
        points, starts = np.unique(inverse[order], return_index=True)
        for u, rows in zip(points, np.split(order, starts[1:]), strict=True):
            d2[rows], mz[rows] = mahalanobis(zk[rows], corr.per_point[u][np.ix_(keep, keep)])
        return d2, mz
    if np.asarray(corr).ndim == 2:
        return mahalanobis(zk, np.asarray(corr, float)[np.ix_(keep, keep)])
    for s in range(0, n, rows_per_chunk):
        rows = slice(s, min(s + rows_per_chunk, n))
        c = np.asarray(corr)[rows]
        d2[rows], mz[rows] = mahalanobis(zk[rows], c[:, keep][:, :, keep])
    return d2, mz


def mahalanobis(z: np.ndarray, corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared Mahalanobis distance of z (n, D) under one correlation (D, D) for every row, or per-row
    correlations (n, D, D), and its z scale.

    Missing entries of z (NaN) are left out: the distance uses the observed sub-vector and its correlation block,
    with the chi-square degrees of freedom reduced to match. Rows sharing a pattern of observed IDPs are solved
    together (a shared correlation: one factorisation per pattern, never copied per row).
    """
    z = np.asarray(z, float)
    corr = np.asarray(corr, float)
    n, d = z.shape
    d2 = np.full(n, np.nan)
    dof = np.full(n, float(d))
    observed = ~np.isnan(z)
    patterns, group = np.unique(observed, axis=0, return_inverse=True)
    for g, obs in enumerate(patterns):
        rows = np.flatnonzero(group.reshape(-1) == g)
        if not obs.any():
            continue
        zo = z[np.ix_(rows, np.flatnonzero(obs))]
        if corr.ndim == 2:
            sol = np.linalg.solve(corr[np.ix_(obs, obs)], zo.T).T
        else:
            sol = np.linalg.solve(corr[rows][:, obs][:, :, obs], zo[..., None])[..., 0]
        d2[rows] = (zo * sol).sum(axis=1)
        dof[rows] = obs.sum()
    return d2, chi2_z(d2, dof)


def chi2_z(d2: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """d2 on a z scale: Phi^-1 of its chi-square(dof) distribution function (one-sided), from the smaller tail in
    logarithms, so that very large d2 keep distinct, finite z (from the distribution function itself z stopped at
    8.2, where it rounds to 1)."""
    d2, dof = np.broadcast_arrays(np.asarray(d2, float), np.asarray(dof, float))
    with np.errstate(divide="ignore"):
        lower = np.maximum(stats.chi2.logcdf(d2, dof), np.log(1e-300))
        upper = stats.chi2.logsf(d2, dof)
    far = np.isneginf(upper) & np.isfinite(d2)  # scipy's log tail underflows beyond about exp(-745)
    if far.any():
        upper = upper.copy()
        upper[far] = _chi2_logsf_asymptotic(d2[far], dof[far])
    return np.where(lower <= upper, special.ndtri_exp(lower), -special.ndtri_exp(upper))


def _chi2_logsf_asymptotic(d2: np.ndarray, dof: np.ndarray, terms: int = 8) -> np.ndarray:
    """log of chi-square(dof)'s survival function far in its tail (d2 much larger than dof): the asymptotic series of
    the upper incomplete gamma function, Q(k, x) ~ x^(k-1) e^-x / Gamma(k) * sum_n (k-1)...(k-n) / x^n."""
    x, k = d2 / 2.0, dof / 2.0
    term, series = np.ones_like(x), np.ones_like(x)
    for n in range(1, terms + 1):
        term = term * (k - n) / x
        series = series + term
    return (k - 1) * np.log(x) - x - special.gammaln(k) + np.log(series)


def assemble_scores(df, idps: list[str], z: np.ndarray, centile: np.ndarray, d2: np.ndarray, mz: np.ndarray,
                    beyond: np.ndarray, out_of_range: np.ndarray):
    """The public score table: input columns, then z:/centile: per IDP, then the subject-level columns.

    Input columns that carry an output's name (a table scored before) are replaced, never duplicated; the
    result's ``attrs["notes"]`` says so.
    """
    import pandas as pd

    extra = {}
    for j, name in enumerate(idps):
        extra[f"z:{name}"] = z[:, j]
        extra[f"centile:{name}"] = centile[:, j]
    extra["multivariate_d2"] = d2
    extra["multivariate_z"] = mz
    extra["n_beyond_samples"] = beyond.sum(axis=1)
    extra["out_of_range"] = out_of_range
    stale = [c for c in df.columns if c in extra or str(c).startswith(("z:", "centile:"))]
    out = pd.concat([df.drop(columns=stale).reset_index(drop=True), pd.DataFrame(extra)], axis=1)
    out.attrs["notes"] = [f"the table already held {len(stale)} score column(s) (e.g. {stale[0]!r}) from an "
                          "earlier scoring: they were replaced"] if stale else []
    return out


FAR_OFF_Z = 5.0
"""A scored cohort whose median |z| on an IDP exceeds this gets a note (:func:`far_off_notes`)."""
FAR_OFF_MIN_SUBJECTS = 10
"""Fewer scored values of an IDP than this give no such note: a few subjects can all deviate that much."""


def far_off_notes(idps: list[str], z: np.ndarray, y: np.ndarray, training_mean: dict[str, float]) -> list[str]:
    """One note per IDP on which the scored subjects (at least :data:`FAR_OFF_MIN_SUBJECTS` with a value) sit a median
    |z| beyond :data:`FAR_OFF_Z` from the reference: under it one healthy person in 1.7 million is that far, so a
    whole cohort there more often measures the IDP otherwise (other units, another FreeSurfer version, another
    column), or gives them wrong covariates (an age), than deviates that much. The note names the median z and, where
    the training mean is known and non-zero, the ratio of the values' median to it (near 1: look at the covariates);
    the scores themselves are left as they are."""
    notes = []
    counted = np.flatnonzero(np.isfinite(z).sum(axis=0) >= FAR_OFF_MIN_SUBJECTS)
    far = counted[np.nanmedian(np.abs(z[:, counted]), axis=0) > FAR_OFF_Z] if counted.size else counted
    ratios, by_power = {}, {}
    for j in far:
        mean, ok = training_mean.get(idps[j]), np.isfinite(z[:, j])
        if mean:
            ratios[j] = float(np.median(y[ok, j])) / mean
            power = _power_of_ten(ratios[j])
            if power:
                by_power.setdefault(power, []).append(j)
    grouped = {j for cols in by_power.values() if len(cols) >= 2 for j in cols}
    for power, cols in sorted(by_power.items()):
        if len(cols) >= 2:
            names = ", ".join(repr(idps[j]) for j in cols[:4]) + (", ..." if len(cols) > 4 else "")
            low, high = min(ratios[j] for j in cols), max(ratios[j] for j in cols)
            notes.append(f"{len(cols)} IDPs ({names}) have values about {10.0 ** power:g} times the reference's "
                         f"(median ratio {low:.3g}-{high:.3g}) and median |z| beyond {FAR_OFF_Z:g}: the table is most "
                         "likely in other units (cm^3 for mm^3 gives 0.001, cm for mm 0.1); convert these columns "
                         "to the reference's units and score again")
    for j in far:
        if j in grouped:
            continue
        name, ok = idps[j], np.isfinite(z[:, j])
        med = float(np.median(z[ok, j]))
        ratio = f"; their median value is {ratios[j]:.3g} times the training mean" if j in ratios else ""
        notes.append(f"IDP {name!r}: the {int(ok.sum())} scored subjects' median z is {med:+.1f}{ratio}. Unless "
                     "they are all severely affected, check that the column measures what the reference's did "
                     "(units, FreeSurfer version, the right column) and that their ages and covariates are right")
    return notes


def units_hint(ratios: list[float]) -> str:
    """A clause for a warning, ", whose values are about 0.001 times the reference's (other units? ...)", when most of
    ``ratios`` (values over the training mean) sit near one power of ten other than 1; else ""."""
    powers = [_power_of_ten(r) for r in ratios]
    common = max(set(powers), key=powers.count) if powers else 0
    if not common or powers.count(common) * 2 <= len(powers):
        return ""
    return f", whose values are about {10.0 ** common:g} times the reference's (other units? cm^3 for mm^3 gives 0.001)"


def _power_of_ten(ratio: float) -> int:
    """The k != 0 with ``ratio`` within a factor 1.5 of 10^k (a unit slip: mm^3 and cm^3, mm and cm), else 0."""
    if not ratio > 0:
        return 0
    k = int(np.round(np.log10(ratio)))
    return k if k and abs(np.log10(ratio) - k) < np.log10(1.5) else 0
