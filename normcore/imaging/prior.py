"""Gaussian-prior residual for the latent denoiser: the network learns the departure from a simple prior."""

from __future__ import annotations

import torch
from torch import nn

from normcore.diffusion.schedule import NoiseSchedule


class GaussianPriorResidual(nn.Module):
    """eps(z_t, t, c) = exact posterior-mean noise under a per-element Gaussian prior + net(z_t, t, c).

    The prior is N(mu_i, s_i^2) for every latent element i, fitted to the healthy training latents. For
    z_t = sqrt(abar) z + sqrt(1 - abar) eps its exact denoiser is
    E[eps | z_t] = sqrt(1 - abar) (z_t - sqrt(abar) mu) / (abar s^2 + 1 - abar).
    An untrained network (zero-initialised output) is therefore already a calibrated healthy prior that
    pulls every element towards the healthy population; the transformer learns what it misses
    (dependence between elements, age and sex effects). The learned-variance output passes through.
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, latent_shape: tuple[int, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("prior_mean", torch.zeros(latent_shape))
        self.register_buffer("prior_var", torch.ones(latent_shape))
        self.register_buffer("abar", schedule.alphas_cumprod.float(), persistent=False)

    @torch.no_grad()
    def fit_prior(self, latents: torch.Tensor, min_var: float = 1e-4) -> GaussianPriorResidual:
        """Per-element mean and variance of (N, C, X, Y, Z) healthy training latents."""
        self.prior_mean.copy_(latents.mean(0))
        self.prior_var.copy_(latents.var(0).clamp_min(min_var))
        return self

    def reference_eps(self, zt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t.long()].view(-1, *([1] * (zt.dim() - 1)))
        return (1 - a).sqrt() * (zt - a.sqrt() * self.prior_mean) / (a * self.prior_var + 1 - a)

    def forward(self, zt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps, v = self.net(zt, t, cond)
        return self.reference_eps(zt, t) + eps, v
