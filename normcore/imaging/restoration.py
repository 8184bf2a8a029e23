"""Pseudo-healthy restoration in latent space: KL-guided inpainting (CADD) and two baselines.

All functions are batched: ``z0`` is (B, C, X, Y, Z), ``cond`` (B, d_cond). The denoiser returns
(eps, v) with v the learned-variance interpolation (see ``LatentTransformer``).
"""

from __future__ import annotations

import torch

from normcore.diffusion.schedule import NoiseSchedule


def gaussian_kl(mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """Element-wise KL(N(mean_q, var_q) || N(mean_p, var_p)) in nats."""
    return 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def posterior_log_variance(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """log beta_tilde_t, with t = 0 clipped to beta_tilde_1 (beta_tilde_0 = 0), as in improved DDPM."""
    t = t.long().clamp(min=1)
    a_t, a_p = schedule.abar(t), schedule.abar(t - 1)
    return torch.log((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))


def model_step(schedule: NoiseSchedule, eps: torch.Tensor, v: torch.Tensor, zt: torch.Tensor, t: torch.Tensor,
               clip_x0: float = 6.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and variance of p(z_{t-1} | z_t) from the denoiser output, and the implied x0 estimate."""
    a_t = _per_row(schedule.abar(t), zt)
    x0 = ((zt - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-clip_x0, clip_x0)
    mean, _ = schedule.posterior(x0, zt, t)
    log_beta = _per_row(torch.log(1 - schedule.abar(t) / schedule.abar(t - 1)), zt)
    log_tilde = _per_row(posterior_log_variance(schedule, t), zt)
    frac = (v + 1) / 2
    return mean, torch.exp(frac * log_beta + (1 - frac) * log_tilde), x0


def step_kl(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, zt: torch.Tensor, t: torch.Tensor,
            cond: torch.Tensor) -> torch.Tensor:
    """Per-element KL(q(z_{t-1} | z_t, z_0) || p_theta(z_{t-1} | z_t, c)) for t >= 1."""
    eps, v = denoiser(zt, t, cond)
    mean_p, var_p, _ = model_step(schedule, eps, v, zt, t)
    mean_q, _ = schedule.posterior(z0, zt, t)
    var_q = torch.exp(_per_row(posterior_log_variance(schedule, t), zt)).expand_as(zt)
    return gaussian_kl(mean_q, var_q, mean_p, var_p)


def ddim_denoise(schedule: NoiseSchedule, denoiser, zt: torch.Tensor, t_start: torch.Tensor, cond: torch.Tensor,
                 steps: int) -> torch.Tensor:
    """Deterministic DDIM from per-row start timesteps ``t_start`` down to a clean latent in ``steps`` steps."""
    z = zt
    fracs = torch.linspace(1.0, 0.0, steps + 1, device=zt.device)
    for i in range(steps):
        t = (t_start.float() * fracs[i]).round().long()
        t_next = (t_start.float() * fracs[i + 1]).round().long() - 1  # -1 = clean data
        t_next = torch.minimum(t_next, t - 1)
        eps, _ = denoiser(z, t, cond)
        a_t, a_n = _per_row(schedule.abar(t), z), _per_row(schedule.abar(t_next), z)
        x0 = ((z - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-6.0, 6.0)
        eps = (z - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        z = a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps
    return z


def kl_mask(kl: torch.Tensor, healthy_p95: torch.Tensor, subject_quantile: float = 0.95) -> torch.Tensor:
    """Elements whose KL exceeds both the subject's own quantile and the healthy cohort's per-element p95."""
    own = torch.quantile(kl.flatten(1).float(), subject_quantile, dim=1)
    return (kl > _per_row(own, kl)) & (kl > healthy_p95)


def noised(schedule: NoiseSchedule, z0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None):
    noise = torch.randn(z0.shape, generator=generator, device=z0.device) if generator is not None \
        else torch.randn_like(z0)
    return schedule.add_noise(z0, noise, t)


@torch.no_grad()
def kl_guided_inpaint(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, cond: torch.Tensor,
                      levels: list[int], healthy_p95: torch.Tensor, steps: int,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """KL-guided inpainting averaged over noise levels; returns (restored latent, mean mask) per subject.

    For each level U: z_U ~ q(z_U | z_0); KL map at U; mask = KL above the subject's 95th percentile
    and above ``healthy_p95[level]``; DDIM from U to 0; keep z_0 where the mask is 0; average over U.
    All subjects and levels run as one batch.
    """
    b, n_lev = z0.shape[0], len(levels)
    z_rep = z0.repeat_interleave(n_lev, dim=0)
    c_rep = cond.repeat_interleave(n_lev, dim=0)
    t = torch.tensor(levels, device=z0.device).repeat(b)
    zt = noised(schedule, z_rep, t, generator)
    kl = step_kl(schedule, denoiser, z_rep, zt, t, c_rep)
    mask = kl_mask(kl, healthy_p95.repeat(b, *([1] * (healthy_p95.dim() - 1))))
    restored = ddim_denoise(schedule, denoiser, zt, t, c_rep, steps)
    stitched = torch.where(mask, restored, z_rep)
    shape = (b, n_lev, *z0.shape[1:])
    return stitched.view(shape).mean(1), mask.float().view(shape).mean(1)


@torch.no_grad()
def plain_restore(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, cond: torch.Tensor, level: int, steps: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Baseline: noise the whole latent to one level and denoise it (no mask, no stitching)."""
    t = torch.full((z0.shape[0],), int(level), device=z0.device)
    return ddim_denoise(schedule, denoiser, noised(schedule, z0, t, generator), t, cond, steps)


@torch.no_grad()
def healthy_kl_quantile(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, cond: torch.Tensor, levels: list[int],
                        q: float = 0.95, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-level, per-element ``q`` quantile of the step KL over a healthy cohort: (levels, C, X, Y, Z)."""
    out = []
    for level in levels:
        t = torch.full((z0.shape[0],), int(level), device=z0.device)
        zt = noised(schedule, z0, t, generator)
        out.append(torch.quantile(step_kl(schedule, denoiser, z0, zt, t, cond).float(), q, dim=0))
    return torch.stack(out)
