"""The Gaussian-prior residual: an untrained latent denoiser is the exact denoiser of the fitted prior."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from normcore.diffusion.parameterisation import GaussianPriorResidual
from normcore.diffusion.schedule import NoiseSchedule
from normcore.imaging.model import ImagingNormativeModel


class ZeroNet(nn.Module):
    def forward(self, z, t, cond):
        return torch.zeros_like(z), torch.full_like(z, 0.25)


def test_fit_prior_is_the_per_element_mean_and_variance():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(50, 2, 3, 3, 3, generator=g) * 0.3 + 1.0
    wrap = GaussianPriorResidual(ZeroNet(), NoiseSchedule("cosine", 100), (2, 3, 3, 3)).fit_prior(latents)
    torch.testing.assert_close(wrap.prior_mean, latents.mean(0))
    torch.testing.assert_close(wrap.prior_var, latents.var(0))


def test_untrained_residual_is_the_regression_of_noise_on_the_noisy_latent():
    """For Gaussian data E[eps | z_t] is linear in z_t; a least-squares fit on simulated pairs recovers it."""
    sched = NoiseSchedule("cosine", 100)
    mu, sd = torch.tensor([0.5, -1.0]).view(2, 1, 1, 1), torch.tensor([0.2, 0.7]).view(2, 1, 1, 1)
    wrap = GaussianPriorResidual(ZeroNet(), sched, (2, 1, 1, 1))
    wrap.prior_mean.copy_(mu.expand(2, 1, 1, 1))
    wrap.prior_var.copy_((sd ** 2).expand(2, 1, 1, 1))
    g = torch.Generator().manual_seed(1)
    n = 200_000
    for step in (5, 40, 90):
        t = torch.full((n,), step)
        z0 = mu + sd * torch.randn(n, 2, 1, 1, 1, generator=g)
        eps = torch.randn(z0.shape, generator=g)
        zt = sched.add_noise(z0, eps, t)
        pred, v = wrap(zt, t, torch.zeros(n, 2))
        for c in range(2):
            x, y = zt[:, c].flatten().double().numpy(), eps[:, c].flatten().double().numpy()
            slope, intercept = np.polyfit(x, y, 1)
            p = pred[:, c].flatten().double().numpy()
            fit_slope, fit_intercept = np.polyfit(x, p, 1)
            assert abs(fit_slope - slope) < 0.02 and abs(fit_intercept - intercept) < 0.02
        assert torch.all(v == 0.25)


def test_autoencoder_can_be_reused_and_only_the_prior_is_trained(tiny_imaging_model, tiny_cohort):
    c = tiny_cohort
    model = ImagingNormativeModel("tiny", device="cpu", seed=5).fit(
        c["volumes"][:8], c["brains"][:8], c["ages"][:8], c["sexes"][:8],
        c["volumes"][8:12], c["brains"][8:12], c["ages"][8:12], c["sexes"][8:12], autoencoder_from=tiny_imaging_model)
    for k, v in tiny_imaging_model.ae_.state_dict().items():
        torch.testing.assert_close(model.ae_.state_dict()[k], v)
    assert model.history_["ae_loss"] == [] and model.history_["dit_loss"]
