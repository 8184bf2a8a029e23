"""Missing values of the Gaussianised training latents, drawn from their conditional distribution given the
observed ones, so that a diffusion model can train on incomplete rows instead of dropping them.

Large cohorts rarely have every IDP for every subject (a region failing quality control, a measure not computed at
one site). Dropping every incomplete row discards most of a table once missingness is spread over many IDPs: with
10% of 200 IDPs missing at random, no row is complete. The model's own stages need no complete rows: the
location-scale stage and the Gaussianising map are fitted per IDP on its observed values
(:class:`~normcore.tabular.location_scale.LocationScale`, :class:`~normcore.tabular.gaussianisation.IDPTransformer`).
Only the network needs a value in every input, and its loss is taken on the observed entries alone
(:func:`~normcore.tabular.training.train_denoiser`): the imputed entries are context for the observed ones, never
a target, so the model is not trained to reproduce the imputation.

:class:`LatentImputer` models the latents as N(0, R), the Gaussian copula the latents are built to approach (each
is standard normal by construction). R is estimated with missing values by a stochastic EM: start from the
pairwise-complete correlations (projected to a valid correlation), then alternate a conditional draw of the missing
entries with the shrunk (Ledoit-Wolf) correlation of the completed table (on at most ``EM_ROWS`` rows). Draws given
the observed values x_o use Matheron's rule: draw z ~ N(0, R), then x_m = z_m + R_mo R_oo^-1 (x_o - z_o), exact
for the conditional N(0, R) and batched over rows with one linear solve per row for any number of draws.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import ledoit_wolf

EM_ROUNDS = 3  # stochastic-EM rounds after the pairwise start (the correlation settles within 2-3)
EM_ROWS = 4000  # rows the EM rounds use at most (a random subset; the pairwise start uses every row)
MIN_EIGENVALUE = 1e-3  # floor of the correlation's eigenvalues (keeps every conditional well posed)
SOLVE_BYTES = 1 << 26  # memory of one batch of per-row systems


def _as_correlation(cov: np.ndarray) -> np.ndarray:
    """The correlation of a symmetric matrix, eigenvalues floored at ``MIN_EIGENVALUE`` and rescaled to unit
    diagonal."""
    cov = (cov + cov.T) / 2
    vals, vecs = np.linalg.eigh(cov)
    fixed = (vecs * np.maximum(vals, MIN_EIGENVALUE * max(float(vals.max()), 1e-12))) @ vecs.T
    scale = 1.0 / np.sqrt(np.clip(np.diag(fixed), 1e-12, None))
    out = fixed * scale[:, None] * scale[None, :]
    np.fill_diagonal(out, 1.0)
    return out


def pairwise_correlation(x: np.ndarray) -> np.ndarray:
    """Each pair's correlation over the rows where both are observed (0 for pairs never or once seen together),
    projected to a valid correlation matrix."""
    observed = ~np.isnan(x)
    filled = np.where(observed, x, 0.0)
    counts = observed.T.astype(float) @ observed.astype(float)
    sums = filled.T @ observed.astype(float)  # sums[i, j]: x_i summed over rows where j is observed too
    squares = (filled**2).T @ observed.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_i, mean_j = sums / counts, sums.T / counts
        cov = filled.T @ filled / counts - mean_i * mean_j
        var_i = squares / counts - mean_i**2
        corr = cov / np.sqrt(var_i * var_i.T)
    corr = np.where((counts > 2) & np.isfinite(corr), corr, 0.0)
    np.fill_diagonal(corr, 1.0)
    return _as_correlation(np.clip(corr, -1.0, 1.0))


class LatentImputer:
    """Conditional draws of a latent table's missing entries under N(0, R), R fitted to the table itself.

    ``fit(x)`` takes an (n, D) array with NaN where missing (at least one observed entry per row); ``draw``
    completes any such array, leaving observed entries exactly as they are. Draws are reproducible from ``seed``.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.correlation_: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> LatentImputer:
        x = np.asarray(x, float)
        self.correlation_ = pairwise_correlation(x)
        if np.isnan(x).any() and len(x) > 2:
            rng = np.random.default_rng(self.seed)
            rows = x[np.sort(rng.permutation(len(x))[:EM_ROWS])]
            for _ in range(EM_ROUNDS):
                completed = self._draws(rows, 1, rng)[0]
                cov = ledoit_wolf(completed, assume_centered=True)[0]
                self.correlation_ = _as_correlation(cov)
        return self

    def draw(self, x: np.ndarray, n_draws: int = 1, seed: int | None = None) -> np.ndarray:
        """(n_draws, n, D) completions of ``x``: observed entries kept, missing ones drawn given each row's observed
        ones."""
        if self.correlation_ is None:
            raise RuntimeError("LatentImputer.draw before fit")
        rng = np.random.default_rng(self.seed + 1 if seed is None else seed)
        return self._draws(np.asarray(x, float), n_draws, rng)

    def _draws(self, x: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        corr = self.correlation_
        n, d = x.shape
        out = np.broadcast_to(x, (n_draws, n, d)).copy()
        incomplete = np.flatnonzero(np.isnan(x).any(axis=1))
        if not len(incomplete):
            return out
        chol = np.linalg.cholesky(corr)
        batch = max(1, SOLVE_BYTES // (8 * d * d))
        eye = np.eye(d)
        for s in range(0, len(incomplete), batch):
            rows = incomplete[s:s + batch]
            obs = ~np.isnan(x[rows])  # (b, D)
            prior = rng.standard_normal((len(rows), d, n_draws))
            z = chol @ prior  # (b, D, K) ~ N(0, R)
            m = obs.astype(float)
            # R_oo padded with the identity on missing entries: solving it applies R_oo^-1 to the observed block
            system = corr[None] * (m[:, :, None] * m[:, None, :]) + eye[None] * (1.0 - m)[:, :, None]
            gap = (np.nan_to_num(x[rows])[:, :, None] - z) * m[:, :, None]
            completed = z + corr @ np.linalg.solve(system, gap)
            filled = np.where(obs[:, :, None], x[rows][:, :, None], completed)  # (b, D, K)
            out[:, rows] = filled.transpose(2, 0, 1)
        return out
