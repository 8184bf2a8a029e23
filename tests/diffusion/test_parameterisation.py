"""The Gaussian-residual parameterisation: an untrained (zero) network is the exact N(0, I) denoiser."""

import pytest
import torch
from torch import nn

from normcore.diffusion import GaussianResidual, NoiseSchedule, sample, wrap_denoiser


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
