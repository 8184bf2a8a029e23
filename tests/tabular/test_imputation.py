"""The latent imputer: pairwise start, exact conditional draws, the correlation recovered under missingness."""

import numpy as np
import pytest

from normcore.tabular.imputation import LatentImputer, pairwise_correlation

TRUE_R = np.array([[1.0, 0.7, -0.3],
                   [0.7, 1.0, 0.2],
                   [-0.3, 0.2, 1.0]])


def _gaussian(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3)) @ np.linalg.cholesky(TRUE_R).T


def test_pairwise_correlation_of_a_complete_table_is_its_sample_correlation():
    x = _gaussian(500, 0)
    assert np.allclose(pairwise_correlation(x), np.corrcoef(x, rowvar=False), atol=1e-10)


def test_pairwise_correlation_uses_each_pair_s_common_rows():
    x = _gaussian(800, 1)
    x[:300, 0] = np.nan  # pair (0, 1) seen on rows 300.., pair (1, 2) on every row
    r = pairwise_correlation(x)
    assert r[0, 1] == pytest.approx(np.corrcoef(x[300:, 0], x[300:, 1])[0, 1], abs=1e-10)
    assert r[1, 2] == pytest.approx(np.corrcoef(x[:, 1], x[:, 2])[0, 1], abs=1e-10)


def test_draws_keep_observed_values_and_complete_rows_exactly():
    x = _gaussian(50, 2)
    x[::3, 1] = np.nan
    imputer = LatentImputer(seed=0)
    imputer.correlation_ = TRUE_R
    draws = imputer.draw(x, n_draws=4)
    observed = ~np.isnan(x)
    assert draws.shape == (4, 50, 3) and np.isfinite(draws).all()
    assert np.array_equal(draws[:, observed], np.broadcast_to(x[observed], (4, observed.sum())))
    assert not np.allclose(draws[0, ::3, 1], draws[1, ::3, 1])  # the draws differ where imputed


def test_draws_follow_the_exact_conditional_gaussian():
    """x_m | x_o ~ N(R_mo R_oo^-1 x_o, R_mm - R_mo R_oo^-1 R_om) for a row missing IDP 0 and one missing 1 and 2."""
    imputer = LatentImputer(seed=3)
    imputer.correlation_ = TRUE_R
    rows = np.array([[np.nan, 1.2, -0.5], [0.8, np.nan, np.nan]])
    draws = imputer.draw(rows, n_draws=40_000)
    for row, miss in ((0, [0]), (1, [1, 2])):
        obs = [j for j in range(3) if j not in miss]
        k = TRUE_R[np.ix_(miss, obs)] @ np.linalg.inv(TRUE_R[np.ix_(obs, obs)])
        mean = k @ rows[row, obs]
        cov = TRUE_R[np.ix_(miss, miss)] - k @ TRUE_R[np.ix_(obs, miss)]
        got = draws[:, row][:, miss]
        assert np.allclose(got.mean(axis=0), mean, atol=0.02)  # standard error < 0.005
        assert np.allclose(np.atleast_2d(np.cov(got, rowvar=False)), np.atleast_2d(cov), atol=0.02)


def test_fit_recovers_the_correlation_from_a_table_missing_a_third_of_its_values():
    x = _gaussian(4000, 4)
    x[np.random.default_rng(5).random(x.shape) < 1 / 3] = np.nan
    x[np.isnan(x).all(axis=1), 0] = 0.0  # every row keeps an observed value
    r = LatentImputer(seed=0).fit(x).correlation_
    assert np.allclose(np.diag(r), 1.0)
    assert np.abs(r - TRUE_R).max() < 0.06
