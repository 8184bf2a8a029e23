"""Per-step Gaussian likelihood terms: the model's reverse step with a learned variance, and its KL.

A denoiser with learned variance returns (eps, v) with v in [-1, 1] interpolating the log variance of
the reverse step between the posterior variance (v = -1) and beta_t (v = 1), as in improved DDPM.
"""

from __future__ import annotations

import torch

from normcore.diffusion.schedule import NoiseSchedule


def gaussian_kl(mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """Element-wise KL(N(mean_q, var_q) || N(mean_p, var_p)) in nats."""
    return 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape one value per batch row so that it broadcasts over the other dimensions of ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def x0_from_eps(xt: torch.Tensor, eps: torch.Tensor, abar_t, clip_x0: float | None) -> torch.Tensor:
    """The clean sample implied by a noise prediction, optionally clipped to +-clip_x0.

    ``abar_t`` is a float (one timestep for the batch) or a tensor broadcastable to ``xt``.
    """
    x0 = (xt - (1 - abar_t) ** 0.5 * eps) / abar_t**0.5
    return x0 if clip_x0 is None else x0.clamp(-clip_x0, clip_x0)


def reverse_step(schedule: NoiseSchedule, eps: torch.Tensor, v: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                 clip_x0: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and variance of p(x_{t-1} | x_t) from a learned-variance denoiser output, and the implied x0."""
    x0 = x0_from_eps(xt, eps, per_row(schedule.abar(t), xt), clip_x0)
    mean, _ = schedule.posterior(x0, xt, t)
    log_beta = per_row(torch.log(1 - schedule.abar(t) / schedule.abar(t - 1)), xt)
    log_tilde = per_row(schedule.posterior_log_variance(t), xt)
    frac = (v + 1) / 2
    return mean, torch.exp(frac * log_beta + (1 - frac) * log_tilde), x0


def step_kl(schedule: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
            v: torch.Tensor, clip_x0: float | None) -> torch.Tensor:
    """Per-element KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t >= 1, given the denoiser output."""
    mean_p, var_p, _ = reverse_step(schedule, eps, v, xt, t, clip_x0)
    mean_q, _ = schedule.posterior(x0, xt, t)
    var_q = torch.exp(per_row(schedule.posterior_log_variance(t), xt)).expand_as(xt)
    return gaussian_kl(mean_q, var_q, mean_p, var_p)
