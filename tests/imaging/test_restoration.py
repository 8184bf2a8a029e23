"""KL-guided inpainting mechanics: the Gaussian KL, the mask rule, stitching and the baselines."""

from __future__ import annotations

import math

import torch

from normcore.diffusion.schedule import NoiseSchedule
from normcore.imaging.restoration import (
    ddim_denoise,
    gaussian_kl,
    kl_guided_inpaint,
    kl_mask,
    model_step,
    plain_restore,
    step_kl,
)

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
    denoiser = lambda z, tt, c: (eps_out, v_out)
    kl = step_kl(schedule, denoiser, z0, zt, t, torch.zeros(2, 2))
    mean_p, var_p, _ = model_step(schedule, eps_out, v_out, zt, t)
    mean_q, var_q = schedule.posterior(z0, zt, t)
    by_hand = 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1)
    torch.testing.assert_close(kl, by_hand, rtol=1e-4, atol=1e-6)
    assert (kl >= -1e-6).all()


def test_learned_variance_interpolates_between_beta_and_posterior_variance():
    schedule = NoiseSchedule("cosine", 100)
    zt, t = torch.zeros(1, 1, 1, 1, 1), torch.tensor([30])
    beta = 1 - schedule.abar(t) / schedule.abar(t - 1)
    _, var_q = schedule.posterior(zt, zt, t)
    _, var_hi, _ = model_step(schedule, zt, torch.ones_like(zt), zt, t)
    _, var_lo, _ = model_step(schedule, zt, -torch.ones_like(zt), zt, t)
    torch.testing.assert_close(var_hi.flatten(), beta, rtol=1e-5, atol=0)
    torch.testing.assert_close(var_lo.flatten(), var_q.flatten(), rtol=1e-5, atol=0)


def test_kl_mask_needs_both_thresholds():
    kl = torch.zeros(1, 1, 10, 1, 1)
    kl[0, 0, :, 0, 0] = torch.arange(10.0)  # subject 95th percentile = 8.55
    healthy = torch.full((1, 10, 1, 1), 100.0)
    healthy[0, 9] = 0.0  # only the last element is above the healthy threshold ...
    healthy[0, 8] = 0.0  # ... and element 8 (value 8) is below the subject's own 95th percentile
    mask = kl_mask(kl, healthy)
    assert mask.flatten().tolist() == [False] * 9 + [True]


def test_perfect_denoiser_restores_the_clean_latent():
    schedule = NoiseSchedule("cosine", 100)
    z0 = torch.randn(3, 2, 2, 2, 2)

    def oracle(z, t, c):  # the exact noise for latents that came from z0
        a = schedule.abar(t).view(-1, 1, 1, 1, 1)
        return (z - a.sqrt() * z0) / (1 - a).sqrt(), torch.zeros_like(z)

    t = torch.tensor([60, 60, 60])
    zt = schedule.add_noise(z0, torch.randn_like(z0), t)
    torch.testing.assert_close(ddim_denoise(schedule, oracle, zt, t, None, 4), z0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain_restore(schedule, oracle, z0, None, 50, 3), z0, rtol=1e-4, atol=1e-4)


def test_inpainting_keeps_unmasked_latents_and_rewrites_masked_ones():
    schedule = NoiseSchedule("cosine", 100)
    z0 = torch.zeros(1, 1, 4, 1, 1)
    z0[0, 0, 2] = 5.0  # an "anomaly" the healthy model (which predicts x0 = 0) does not expect

    def healthy_zero(z, t, c):  # a model of latents that are exactly 0
        a = schedule.abar(t).view(-1, 1, 1, 1, 1)
        return z / (1 - a).sqrt(), torch.zeros_like(z)

    healthy_p95 = torch.full((2, 1, 4, 1, 1), 1e-3)
    out, mask_share = kl_guided_inpaint(schedule, healthy_zero, z0, torch.zeros(1, 2), [20, 40], healthy_p95, 3,
                                        torch.Generator().manual_seed(0))
    assert float(out[0, 0, 2]) == 0.0  # the anomalous element was masked at both levels and restored to 0
    assert torch.equal(out[0, 0, [0, 1, 3]], z0[0, 0, [0, 1, 3]])  # the rest is the subject's own latent
    assert float(mask_share[0, 0, 2]) == 1.0 and float(mask_share[0, 0, 0]) == 0.0
