"""Per-step likelihood terms: the Gaussian KL, the learned-variance reverse step and the step KL."""

from __future__ import annotations

import math

import torch

from normcore.diffusion.likelihood import gaussian_kl, reverse_step, step_kl
from normcore.diffusion.schedule import NoiseSchedule

torch.set_num_threads(1)


def test_gaussian_kl_matches_hand_computation():
    # KL(N(1, 4) || N(0, 1)) = log(1/2) + (4 + 1)/2 - 1/2 = 2 - log 2
    kl = gaussian_kl(torch.tensor(1.0), torch.tensor(4.0), torch.tensor(0.0), torch.tensor(1.0))
    assert math.isclose(float(kl), 2.0 - math.log(2.0), rel_tol=1e-6)
    same = gaussian_kl(torch.tensor(0.3), torch.tensor(0.5), torch.tensor(0.3), torch.tensor(0.5))
    assert abs(float(same)) < 1e-7


def test_step_kl_is_the_closed_form_between_posterior_and_model_step():
    schedule = NoiseSchedule("cosine", 100)
    z0 = torch.randn(2, 1, 2, 2, 2)
    zt = torch.randn(2, 1, 2, 2, 2)
    t = torch.tensor([10, 40])
    eps_out, v_out = torch.randn_like(z0), torch.rand_like(z0) * 2 - 1
    kl = step_kl(schedule, z0, zt, t, eps_out, v_out, 6.0)
    mean_p, var_p, _ = reverse_step(schedule, eps_out, v_out, zt, t, 6.0)
    mean_q, var_q = schedule.posterior(z0, zt, t)
    by_hand = 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1)
    torch.testing.assert_close(kl, by_hand, rtol=1e-4, atol=1e-6)
    assert (kl >= -1e-6).all()


def test_learned_variance_interpolates_between_beta_and_posterior_variance():
    schedule = NoiseSchedule("cosine", 100)
    zt, t = torch.zeros(1, 1, 1, 1, 1), torch.tensor([30])
    beta = 1 - schedule.abar(t) / schedule.abar(t - 1)
    _, var_q = schedule.posterior(zt, zt, t)
    _, var_hi, _ = reverse_step(schedule, zt, torch.ones_like(zt), zt, t, 6.0)
    _, var_lo, _ = reverse_step(schedule, zt, -torch.ones_like(zt), zt, t, 6.0)
    torch.testing.assert_close(var_hi.flatten(), beta, rtol=1e-5, atol=0)
    torch.testing.assert_close(var_lo.flatten(), var_q.flatten(), rtol=1e-5, atol=0)
