"""KL-guided inpainting mechanics: the mask rule, stitching and the baselines."""

from __future__ import annotations

import torch

from normcore.diffusion.samplers import ddim_from_levels
from normcore.diffusion.schedule import NoiseSchedule
from normcore.imaging.restoration import kl_guided_inpaint, kl_mask, plain_restore

torch.set_num_threads(1)


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
    eps_only = lambda z, tt, c: oracle(z, tt, c)[0]
    torch.testing.assert_close(ddim_from_levels(eps_only, schedule, zt, t, None, 4, 6.0), z0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain_restore(schedule, oracle, z0, None, 50, 3, 6.0), z0, rtol=1e-4, atol=1e-4)


def test_inpainting_keeps_unmasked_latents_and_rewrites_masked_ones():
    schedule = NoiseSchedule("cosine", 100)
    z0 = torch.zeros(1, 1, 4, 1, 1)
    z0[0, 0, 2] = 5.0  # an "anomaly" the healthy model (which predicts x0 = 0) does not expect

    def healthy_zero(z, t, c):  # a model of latents that are exactly 0
        a = schedule.abar(t).view(-1, 1, 1, 1, 1)
        return z / (1 - a).sqrt(), torch.zeros_like(z)

    healthy_p95 = torch.full((2, 1, 4, 1, 1), 1e-3)
    out, mask_share = kl_guided_inpaint(schedule, healthy_zero, z0, torch.zeros(1, 2), [20, 40], healthy_p95, 3,
                                        6.0, torch.Generator().manual_seed(0))
    assert float(out[0, 0, 2]) == 0.0  # the anomalous element was masked at both levels and restored to 0
    assert torch.equal(out[0, 0, [0, 1, 3]], z0[0, 0, [0, 1, 3]])  # the rest is the subject's own latent
    assert float(mask_share[0, 0, 2]) == 1.0 and float(mask_share[0, 0, 0]) == 0.0
