"""The Gaussian-residual parameterisations: an untrained (zero) network is the exact denoiser of N(0, I), of a
per-element Gaussian prior, or of a Gaussian copula N(0, R)."""

import pytest
import torch
from torch import nn

from normcore.diffusion import (
    CovariateTrend,
    GaussianCopulaResidual,
    GaussianPriorResidual,
    GaussianResidual,
    NoiseSchedule,
    sample,
    wrap_denoiser,
)
from normcore.diffusion.samplers import ddim_decode


class Zero(nn.Module):
    def forward(self, x, t, cond):
        return torch.zeros_like(x)


def test_zero_network_samples_standard_normal():
    s = NoiseSchedule("cosine", 1000)
    eps = GaussianResidual(Zero(), s)
    x = sample(eps, s, torch.zeros(20, 1), (20, 2000, 3), "ddpm", 1000,
               generator=torch.Generator().manual_seed(0), clip_x0=None)
    assert abs(float(x.mean())) < 0.02
    assert abs(float(x.std()) - 1.0) < 0.02


def test_skip_term_matches_the_posterior_mean_noise_of_standard_normal_data():
    s = NoiseSchedule("linear", 100)
    torch.manual_seed(0)
    t = torch.full((200_000,), 60)
    x0, noise = torch.randn(200_000, 1), torch.randn(200_000, 1)
    xt = s.add_noise(x0, noise, t)
    pred = GaussianResidual(Zero(), s)(xt, t, None)
    # the regression of eps on x_t has no residual signal left: E[(eps - pred) x_t] = 0
    assert abs(float(((noise - pred) * xt).mean())) < 0.01


def test_state_dict_is_the_network_state_and_eps_is_unwrapped():
    s = NoiseSchedule("cosine", 10)
    net = nn.Linear(2, 2)
    assert set(GaussianResidual(net, s).state_dict()) == {"net.weight", "net.bias"}
    assert wrap_denoiser(net, s, "eps") is net
    with pytest.raises(ValueError, match="parameterisation"):
        wrap_denoiser(net, s, "v")


def _correlated(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n rows of N(0, R) with unit variances and correlations 0.8 (elements 0, 1) and -0.5 (elements 1, 2); R."""
    r = torch.tensor([[1.0, 0.8, -0.4], [0.8, 1.0, -0.5], [-0.4, -0.5, 1.0]])
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g) @ torch.linalg.cholesky(r).T, r


def test_copula_prior_is_the_exact_denoiser_of_its_fitted_correlation():
    s = NoiseSchedule("linear", 100)
    data, r = _correlated(20_000, 0)
    eps = GaussianCopulaResidual(Zero(), s, 3).fit_correlation(data)
    fitted = eps.prior_basis @ torch.diag(eps.prior_eigvals) @ eps.prior_basis.T
    assert torch.allclose(fitted.diagonal(), torch.ones(3), atol=1e-5)  # a correlation: unit variances
    assert float((fitted - r).abs().max()) < 0.03
    x0, _ = _correlated(200_000, 1)
    noise, t = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(2)), torch.full((200_000,), 25)
    xt = s.add_noise(x0, noise, t)
    pred = eps(xt, t, None)
    # the posterior mean of the noise leaves nothing linear in x_t: E[(eps - pred) x_t^T] = 0 for every pair;
    # the standard-normal prior's skip term does not (it ignores the correlation)
    assert float(((noise - pred)[:, :, None] * xt[:, None, :]).mean(0).abs().max()) < 0.01
    standard = GaussianResidual(Zero(), s)(xt, t, None)
    assert float(((noise - standard)[:, :, None] * xt[:, None, :]).mean(0).abs().max()) > 0.2


def test_copula_prior_samples_its_correlation_with_standard_normal_marginals():
    s = NoiseSchedule("cosine", 1000)
    data, r = _correlated(20_000, 0)
    eps = GaussianCopulaResidual(Zero(), s, 3).fit_correlation(data)
    x = sample(eps, s, torch.zeros(10, 1), (10, 2000, 3), "ddpm", 1000,
               generator=torch.Generator().manual_seed(0), clip_x0=None).reshape(-1, 3)
    assert float(x.mean(0).abs().max()) < 0.03 and float((x.std(0) - 1).abs().max()) < 0.03
    assert float((torch.corrcoef(x.T) - r).abs().max()) < 0.04


def test_copula_prior_state_round_trips_and_is_checked():
    s = NoiseSchedule("cosine", 10)
    data, _ = _correlated(500, 0)
    fitted = GaussianCopulaResidual(Zero(), s, 3).fit_correlation(data)
    assert set(fitted.state_dict()) == {"prior_basis", "prior_eigvals"}  # beside the network's (none here)
    loaded = wrap_denoiser(Zero(), s, "gaussian-residual", fitted.prior_state())
    assert isinstance(loaded, GaussianCopulaResidual)
    xt, t = torch.randn(4, 3), torch.tensor([1, 3, 5, 9])
    assert torch.equal(loaded(xt, t, None), fitted(xt, t, None))
    assert torch.allclose(GaussianCopulaResidual(Zero(), s, 3)(xt, t, None),
                          GaussianResidual(Zero(), s)(xt, t, None))  # unfitted: R = I, the standard-normal prior
    with pytest.raises(ValueError, match="prior_basis"):
        GaussianCopulaResidual(Zero(), s, 4).load_prior_state(fitted.prior_state())
    with pytest.raises(ValueError, match="not eps"):
        wrap_denoiser(Zero(), s, "eps", fitted.prior_state())


class ZeroWithVariance(nn.Module):
    def forward(self, x, t, cond):
        return torch.zeros_like(x), torch.zeros_like(x)


def _trend_data(n: int, seed: int):
    """Latents (n, 2, 1, 1) = 1 + 0.8 age - 0.3 age^2 + 0.5 sex (channel 0; channel 1 has no trend) + N(0, 0.2^2);
    conditions (age, sex, given flag)."""
    g = torch.Generator().manual_seed(seed)
    age, sex = torch.randn(n, generator=g), torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    trend = torch.stack([1 + 0.8 * age - 0.3 * age ** 2 + 0.5 * sex, torch.full_like(age, -2.0)], 1)
    data = trend.view(n, 2, 1, 1) + 0.2 * torch.randn(n, 2, 1, 1, generator=g)
    return data, torch.stack([age, sex, torch.ones(n)], 1)


def test_covariate_trend_prior_recovers_a_planted_trend_and_its_residual_variance():
    data, cond = _trend_data(4000, 0)
    wrap = GaussianPriorResidual(ZeroWithVariance(), NoiseSchedule("cosine", 100), (2, 1, 1),
                                 CovariateTrend(age=0, sex=1, given=2)).fit_prior(data, cond)
    probe = torch.tensor([[-1.0, 1.0, 1.0], [1.5, -1.0, 1.0]])
    expected = torch.tensor([[1 - 0.8 - 0.3 + 0.5, -2.0], [1 + 1.2 - 0.675 - 0.5, -2.0]]).view(2, 2, 1, 1)
    torch.testing.assert_close(wrap.mean_at(probe), expected, atol=0.03, rtol=0)
    torch.testing.assert_close(wrap.prior_var, torch.full((2, 1, 1), 0.04), atol=0.004, rtol=0)
    # covariates withheld (flag 0): the unconditional mean of the training latents, whatever the age says
    withheld = torch.tensor([[2.0, 1.0, 0.0]])
    torch.testing.assert_close(wrap.mean_at(withheld)[0], data.mean(0), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one condition row per training row"):
        wrap.fit_prior(data)


def test_a_fixed_code_decoded_at_two_ages_differs_by_the_prior_trend():
    """The flow map of a Gaussian prior is mu(c) + s * code: with an untrained network, DDIM decoding of one code
    under two conditions moves the result by the difference of the prior means (the counterfactual's mechanism)."""
    data, cond = _trend_data(500, 1)
    schedule = NoiseSchedule("cosine", 1000)
    wrap = GaussianPriorResidual(ZeroWithVariance(), schedule, (2, 1, 1),
                                 CovariateTrend(age=0, sex=1, given=2)).fit_prior(data, cond)
    code = torch.randn(8, 2, 1, 1, generator=torch.Generator().manual_seed(2))
    young, old = torch.tensor([[-1.0, 1.0, 1.0]]).repeat(8, 1), torch.tensor([[1.0, 1.0, 1.0]]).repeat(8, 1)
    moved = ddim_decode(lambda x, t, c: wrap(x, t, c)[0], schedule, code, old, 100) \
        - ddim_decode(lambda x, t, c: wrap(x, t, c)[0], schedule, code, young, 100)
    torch.testing.assert_close(moved, (wrap.mean_at(old) - wrap.mean_at(young)), atol=0.02, rtol=0)
    assert float(moved[:, 0].mean()) > 1.4  # the planted trend: 0.8 per unit of age, two units apart


def test_constant_prior_has_no_trend_state_and_a_trend_needs_a_per_element_prior():
    wrap = GaussianPriorResidual(ZeroWithVariance(), NoiseSchedule("cosine", 10), (2, 1, 1))
    assert "prior_trend" not in wrap.state_dict() and wrap.trend is None
    with pytest.raises(ValueError, match="per-element prior"):
        GaussianPriorResidual(ZeroWithVariance(), NoiseSchedule("cosine", 10), None, CovariateTrend())
