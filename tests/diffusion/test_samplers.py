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


@pytest.mark.parametrize("sampler,steps,eta", [("dpm++2m-sde", 25, None), ("dpm++2m-sde", 25, 0.5),
                                               ("dpm++2m", 25, 0.0), ("ddim", 200, 0.0),
                                               ("ddim", 1000, 1.0),
                                               ("ddpm", 1000, 0.0)])
def test_sampler_recovers_gaussian_target(sampler, steps, eta):
    s = NoiseSchedule("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    cond = torch.zeros(40, 1)
    x = sample(exact_eps(s), s, cond, (40, 2000, 1), sampler, steps, eta, g, clip_x0=None)
    assert abs(float(x.mean()) - MU) < 0.02
    assert abs(float(x.std()) - SD) < 0.02


def mixture_eps(schedule, w=(0.8, 0.2), mu=(-0.3, 1.5), sd=(0.5, 0.3)):
    """Exact epsilon of a two-component normal mixture (a bimodal target), and the target's CDF."""
    w, mu, sd = (torch.tensor(v, dtype=torch.float64) for v in (w, mu, sd))

    def eps(x, t, cond):
        a = schedule.abar(t).double().view(-1, *([1] * x.dim()))
        var, mean = a * sd**2 + 1 - a, a.sqrt() * mu
        resp = torch.softmax(w.log() - 0.5 * var.log() - 0.5 * (x.double()[..., None] - mean) ** 2 / var, dim=-1)
        return ((1 - a[..., 0]).sqrt() * (resp * (x.double()[..., None] - mean) / var).sum(-1)).float()

    def cdf(v):
        return (w * torch.distributions.Normal(mu, sd).cdf(v.double()[..., None])).sum(-1)
    return eps, cdf


def test_sde_solver_with_eta_zero_is_the_ode_solver():
    s = NoiseSchedule("cosine", 1000)
    cond = torch.zeros(4, 1)
    draw = lambda name, eta: sample(exact_eps(s), s, cond, (4, 50, 2), name, 12, eta,
                                    torch.Generator().manual_seed(3), log_snr_start=-3.0)
    assert torch.allclose(draw("dpm++2m-sde", 0.0), draw("dpm++2m", None), atol=1e-5)
    assert not torch.allclose(draw("dpm++2m-sde", 0.5), draw("dpm++2m", None), atol=1e-2)


def test_half_noise_from_log_snr_minus_three_disperses_less_than_the_full_sde():
    """With the exact denoiser of a bimodal target, 25 steps of the full reverse SDE spaced over the whole schedule
    over-disperse (the normal scores of the samples' true centiles have SD about 1.03); half the noise, with the
    steps spaced from log-SNR -3, cuts that error by about half (1.016 here). The tabular model's default rests
    on this."""
    s = NoiseSchedule("cosine", 1000)
    eps, cdf = mixture_eps(s)
    spread = {}
    for eta, start in ((1.0, None), (0.5, -3.0)):
        x = sample(eps, s, torch.zeros(1, 1), (1, 100_000, 1), "dpm++2m-sde", 25, eta,
                   torch.Generator().manual_seed(0), log_snr_start=start)
        z = torch.special.ndtri(cdf(x.reshape(-1)).clamp(1e-12, 1 - 1e-12))
        spread[eta] = float(z.std()) - 1
    assert 0.02 < spread[1.0] and abs(spread[0.5]) < 0.65 * spread[1.0]


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
