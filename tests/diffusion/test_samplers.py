"""Samplers driven by the exact epsilon of a Gaussian target must reproduce that target.

Stochastic samplers use the posterior variance, which is exact only for fine chains (a short
stochastic chain is under-dispersed), so they are checked with the full chain; the ODE solvers with
short chains and no clipping (DDIM is first order and needs a longer chain than DPM-Solver++(2M)).
"""

import pytest
import torch

from normcore.diffusion import NoiseSchedule, ddim_decode, ddim_invert, sample

MU, SD = 1.5, 0.6


def exact_eps(schedule):
    def eps(x, t, cond):
        a = schedule.abar(t).view(-1, *([1] * (x.dim() - 1)))
        # x_t ~ N(sqrt(a) MU, a SD^2 + 1 - a); E[eps | x_t] = sqrt(1-a) (x_t - sqrt(a) MU) / var
        return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * SD**2 + 1 - a)
    return eps


@pytest.mark.parametrize("sampler,steps,eta", [("dpm++2m-sde", 25, 0.0), ("dpm++2m", 25, 0.0), ("ddim", 200, 0.0),
                                               ("ddim", 1000, 1.0),
                                               ("ddpm", 1000, 0.0)])
def test_sampler_recovers_gaussian_target(sampler, steps, eta):
    s = NoiseSchedule("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    cond = torch.zeros(40, 1)
    x = sample(exact_eps(s), s, cond, (40, 2000, 1), sampler, steps, eta, g, clip_x0=None)
    assert abs(float(x.mean()) - MU) < 0.02
    assert abs(float(x.std()) - SD) < 0.02


def test_sampling_is_reproducible_with_a_seed():
    s = NoiseSchedule("linear", 100)
    draw = lambda seed: sample(exact_eps(s), s, torch.zeros(3, 1), (3, 5, 1), "ddpm", 20,
                               generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


def test_ddim_inversion_then_decoding_returns_the_data():
    """The deterministic code of a sample decodes back to it; the fixed-point refinements are what make the round
    trip exact at a short chain (plain first-order inversion is off by a tenth of the data's scale)."""
    s = NoiseSchedule("cosine", 1000)
    x0 = MU + SD * torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.zeros(64, 1)
    errors = {}
    for refinements in (0, 2):
        code = ddim_invert(exact_eps(s), s, x0, cond, 50, refinements)
        errors[refinements] = float((ddim_decode(exact_eps(s), s, code, cond, 50) - x0).abs().max())
    assert errors[2] < 0.005 < 0.05 < errors[0]
    # the code of Gaussian data under its exact denoiser is (x0 - MU) / SD, up to the chain's discretisation
    assert float((code - (x0 - MU) / SD).abs().max()) < 0.2
