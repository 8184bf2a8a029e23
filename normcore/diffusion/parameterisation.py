"""How a network's output becomes the noise prediction: plain, or a residual on an exact Gaussian denoiser."""

from __future__ import annotations

import torch
from torch import nn

from normcore.diffusion.schedule import NoiseSchedule

PARAMETERISATIONS = ("gaussian-residual", "eps")


class GaussianPriorResidual(nn.Module):
    """eps(x_t, t, c) = exact posterior-mean noise under a Gaussian prior + net(x_t, t, c).

    For data x ~ N(mu, s^2) element-wise and x_t = sqrt(abar) x + sqrt(1 - abar) eps, the exact denoiser
    is E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar). The network learns
    only the departure from it, so a network that has learnt little falls back to the calibrated prior.

    ``prior_shape=None`` is the standard-normal prior (mu = 0, s = 1: the term is sqrt(1 - abar) x_t) with
    no state of its own: the wrapper's state is the network's under ``net.``. With a ``prior_shape`` the
    prior is per element, held in the buffers ``prior_mean`` and ``prior_var`` and set by :meth:`fit_prior`.
    Networks that return a tuple (noise, extra outputs such as a learned variance) keep the extras as they are.
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, prior_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.net = net
        self.standard = prior_shape is None
        self.register_buffer("abar", schedule.alphas_cumprod.float(), persistent=False)
        self.register_buffer("skip", (1 - schedule.alphas_cumprod).sqrt().float(), persistent=False)
        if not self.standard:
            self.register_buffer("prior_mean", torch.zeros(prior_shape))
            self.register_buffer("prior_var", torch.ones(prior_shape))

    @torch.no_grad()
    def fit_prior(self, data: torch.Tensor, min_var: float = 1e-4) -> GaussianPriorResidual:
        """Per-element mean and variance of clean training data (N, *prior_shape)."""
        if self.standard:
            raise ValueError("the standard-normal prior has nothing to fit")
        self.prior_mean.copy_(data.mean(0))
        self.prior_var.copy_(data.var(0).clamp_min(min_var))
        return self

    def reference_eps(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact denoiser of the prior alone."""
        shape = (-1, *([1] * (xt.dim() - 1)))
        if self.standard:
            return self.skip[t.long()].view(shape) * xt
        a = self.abar[t.long()].view(shape)
        return (1 - a).sqrt() * (xt - a.sqrt() * self.prior_mean) / (a * self.prior_var + 1 - a)

    def forward(self, xt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor):
        out = self.net(xt, t, cond)
        if isinstance(out, tuple):
            return (self.reference_eps(xt, t) + out[0], *out[1:])
        return self.reference_eps(xt, t) + out


class GaussianResidual(GaussianPriorResidual):
    """The standard-normal case used by the tabular model: IDPs are marginally N(0, 1) after preprocessing."""

    def __init__(self, net: nn.Module, schedule: NoiseSchedule):
        super().__init__(net, schedule, None)


def wrap_denoiser(net: nn.Module, schedule: NoiseSchedule, parameterisation: str) -> nn.Module:
    """The module that predicts noise: ``net`` itself (``"eps"``) or its Gaussian-residual wrapper."""
    if parameterisation == "eps":
        return net
    if parameterisation == "gaussian-residual":
        return GaussianResidual(net, schedule)
    raise ValueError(f"unknown parameterisation {parameterisation!r}; choose one of {PARAMETERISATIONS}")
