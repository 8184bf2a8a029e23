"""The sample CRPS: the closed form of a normal, unbiased at few samples, proper."""

import numpy as np
import pytest
from scipy import stats

from normcore.metrics import sample_crps


def normal_crps(mu: float, sigma: float, y: np.ndarray) -> np.ndarray:
    """CRPS of N(mu, sigma^2) at y in closed form (Gneiting & Raftery 2007)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


def test_many_samples_give_the_normal_closed_form():
    g = np.random.default_rng(0)
    y = np.array([-3.0, -0.5, 0.0, 1.2, 4.0])
    samples = g.normal(0.3, 1.5, size=(len(y), 200_000))
    assert np.allclose(sample_crps(samples, y), normal_crps(0.3, 1.5, y), atol=0.01)


def test_the_fair_estimator_is_unbiased_at_four_samples_where_the_plain_one_is_not():
    g = np.random.default_rng(1)
    y = np.zeros(50_000)
    samples = g.normal(size=(len(y), 4))
    exact = normal_crps(0.0, 1.0, np.zeros(1))[0]
    fair = sample_crps(samples, y).mean()
    plain = np.abs(samples).mean() - 0.5 * np.abs(samples[:, :, None] - samples[:, None, :]).mean()
    assert abs(fair - exact) < 0.005 < abs(plain - exact)


def test_the_true_distribution_scores_lowest_and_extra_axes_are_kept():
    g = np.random.default_rng(2)
    y = g.normal(size=(4000, 3))
    true = g.normal(size=(4000, 64, 3))
    scores = {name: sample_crps(s, y).mean() for name, s in
              {"true": true, "shifted": true + 0.3, "narrow": 0.7 * true, "wide": 1.4 * true}.items()}
    assert sample_crps(true, y).shape == (4000, 3)
    assert min(scores, key=scores.get) == "true"


def test_one_sample_is_refused():
    with pytest.raises(ValueError, match="at least 2 samples"):
        sample_crps(np.zeros((3, 1)), np.zeros(3))
