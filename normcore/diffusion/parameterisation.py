"""How a network's output is turned into the noise prediction the samplers use."""

from __future__ import annotations

import torch
from torch import nn

from normcore.diffusion.schedule import NoiseSchedule

PARAMETERISATIONS = ("gaussian-residual", "eps")


class GaussianResidual(nn.Module):
    """eps(x_t, t, c) = sqrt(1 - abar_t) * x_t + net(x_t, t, c).

    The first term is the exact posterior-mean noise for standard-normal data, which is what every
    IDP is marginally after the conditional standardisation and Gaussianisation; the network only
    learns the departure from it (dependence between IDPs, residual non-Gaussianity). A network that
    has learnt little (high D, few subjects, early stopping) therefore falls back to calibrated
    independent marginals instead of leaving un-denoised directions that over-disperse the samples.
    The schedule term is a non-persistent buffer: the wrapper's state is the network's under ``net.``.
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.net = net
        self.register_buffer("skip", (1 - schedule.alphas_cumprod).sqrt().float(), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        k = self.skip[t.long()].view(-1, *([1] * (x.dim() - 1)))
        return k * x + self.net(x, t, cond)


def wrap_denoiser(net: nn.Module, schedule: NoiseSchedule, parameterisation: str) -> nn.Module:
    """The module that predicts noise: ``net`` itself (``"eps"``) or its Gaussian-residual wrapper."""
    if parameterisation == "eps":
        return net
    if parameterisation == "gaussian-residual":
        return GaussianResidual(net, schedule)
    raise ValueError(f"unknown parameterisation {parameterisation!r}; choose one of {PARAMETERISATIONS}")
