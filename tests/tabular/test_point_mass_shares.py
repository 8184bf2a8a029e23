import json

import numpy as np
from scipy import special

from normcore.tabular.point_mass_shares import (
    PENALTIES,
    PointMassShares,
    _fit,
    _log_probabilities,
    choose_penalty,
)


def _cohort(n: int, seed: int):
    """Ages 20-80 and three sites (half, 30%, 20% of the rows); measure 0 has a floor whose log-odds rise with age
    and differ by site, measure 1 a floor of 20% and a ceiling of 10% everywhere, measure 2 neither."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n)
    site = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    p_floor = special.expit(-1.0 + 0.05 * (age - 50) + np.array([0.0, 1.0, -1.0])[site])
    draw = rng.random((n, 2))
    at_floor = np.c_[draw[:, 0] < p_floor, draw[:, 1] < 0.2, np.zeros(n, bool)]
    at_ceiling = np.c_[np.zeros(n, bool), draw[:, 1] > 0.9, np.zeros(n, bool)]
    basis = np.c_[(age - 50) / 30, ((age - 50) / 30) ** 2]
    return basis, site[:, None], at_floor, at_ceiling, p_floor


def test_shares_follow_age_and_levels_and_an_unseen_level_is_the_training_mixture():
    basis, codes, at_floor, at_ceiling, p_floor = _cohort(4000, 0)
    shares = PointMassShares().fit(basis, codes, [3], at_floor, at_ceiling, seed=0)
    pred = shares.predict(basis, codes)
    assert pred.shape == (4000, 3, 2)
    assert np.abs(pred[:, 0, 0] - p_floor).mean() < 0.03
    assert (pred[:, 0, 1] == 0).all() and (pred[:, 2] == 0).all()
    assert np.abs(pred[:, 1] - [0.2, 0.1]).max() < 0.03

    known = np.stack([shares.predict(basis[:5], np.full((5, 1), level)) for level in range(3)])
    mixture = np.einsum("l,l...->...", np.asarray(shares.frequencies[0]), known)
    for unseen in (-1, 3):  # marginalised, or a level added after the fit (adaptation)
        np.testing.assert_allclose(shares.predict(basis[:5], np.full((5, 1), unseen)), mixture, rtol=1e-12)

    again = PointMassShares.from_dict(json.loads(json.dumps(shares.to_dict())))
    np.testing.assert_array_equal(again.predict(basis, codes), pred)


def test_rows_without_a_value_are_left_out_of_a_measures_regression():
    basis, codes, at_floor, at_ceiling, _ = _cohort(3000, 1)
    observed = np.ones_like(at_floor)
    observed[:1500, 0] = False
    at_floor_missing = at_floor.copy()
    at_floor_missing[:1500, 0] = True  # what a missing value would look like if it were counted
    half = PointMassShares().fit(basis[1500:], codes[1500:], [3], at_floor[1500:], at_ceiling[1500:], seed=0)
    masked = PointMassShares().fit(basis, codes, [3], at_floor_missing, at_ceiling, observed, seed=0)
    np.testing.assert_allclose(masked.predict(basis, codes)[:, 0], half.predict(basis, codes)[:, 0], atol=1e-6)


def test_level_effects_that_are_noise_are_shrunk_and_a_real_effect_is_kept():
    """30 site dummies that say nothing of a 3% outcome: the chosen penalty keeps every site's share near the
    overall one (the smallest penalty spreads them from 0.2% to 8%); a strong real effect keeps a small one."""
    rng = np.random.default_rng(2)
    n = 600
    site = rng.integers(0, 30, n)
    rare = (rng.random(n) < 0.03).astype(np.int64)
    no_age = np.zeros((n, 0))
    chosen = PointMassShares().fit(no_age, site[:, None], [30], rare[:, None].astype(bool), np.zeros((n, 1), bool))
    shares = chosen.predict(np.zeros((30, 0)), np.arange(30)[:, None])[:, 0, 0]
    assert np.abs(shares - rare.mean()).max() < 0.015
    loose = _fit(np.eye(30)[site][:, 1:], rare, 2, PENALTIES[0])
    assert np.ptp(np.exp(_log_probabilities(np.eye(30)[:, 1:], loose))[:, 1]) > 0.05

    signal = rng.normal(size=(n, 1))
    strong = (rng.random(n) < special.expit(3 * signal[:, 0])).astype(np.int64)
    assert choose_penalty(signal, strong, 2, seed=0) <= 0.01
    assert choose_penalty(signal, np.r_[np.ones(1, np.int64), np.zeros(n - 1, np.int64)], 2, seed=0) == PENALTIES[-1]
