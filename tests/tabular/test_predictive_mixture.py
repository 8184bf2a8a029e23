import numpy as np

from normcore.tabular.predictive_mixture import PredictiveMixture


def test_mixture_moments_are_those_of_its_floor_ceiling_and_body():
    """Against a large draw from the mixture it describes: 30% at 0, 10% at 20, the rest N(8, 4)."""
    rng = np.random.default_rng(0)
    n = 400_000
    part = rng.choice(3, size=n, p=[0.3, 0.1, 0.6])
    values = np.where(part == 0, 0.0, np.where(part == 1, 20.0, rng.normal(8.0, 2.0, n)))
    mixture = PredictiveMixture(np.array([0.0]), np.array([20.0]), np.full((1, 1), 0.3), np.full((1, 1), 0.1),
                                np.full((1, 1), 8.0), np.full((1, 1), 4.0))
    assert mixture.body_share[0, 0] == 0.6
    assert abs(mixture.mean[0, 0] - values.mean()) < 0.05 and abs(mixture.var[0, 0] / values.var() - 1) < 0.01


def test_a_continuous_mixture_is_its_moments_exactly():
    rng = np.random.default_rng(1)
    mean, var = rng.normal(size=(5, 3)), rng.random((5, 3))
    mixture = PredictiveMixture.continuous(mean, var)
    assert np.isnan(mixture.floor).all() and (mixture.floor_share == 0).all() and (mixture.body_share == 1).all()
    np.testing.assert_array_equal(mixture.mean, mean)
    np.testing.assert_array_equal(mixture.var, var)
