"""Pseudo-healthy restoration in latent space: KL-guided inpainting (CADD) and two baselines.

All functions are batched: ``z0`` is (B, C, X, Y, Z), ``cond`` (B, d_cond). The denoiser returns
(eps, v) with v the learned-variance interpolation (see ``LatentTransformer``). The diffusion maths
(forward noising, the per-step KL, the partial DDIM chain) is :mod:`normcore.diffusion`'s.
"""

from __future__ import annotations

import torch

from normcore.diffusion.likelihood import per_row, step_kl
from normcore.diffusion.samplers import ddim_from_levels
from normcore.diffusion.schedule import NoiseSchedule


def denoiser_step_kl(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, zt: torch.Tensor, t: torch.Tensor,
                     cond: torch.Tensor, clip_x0: float) -> torch.Tensor:
    """Per-element KL(q(z_{t-1} | z_t, z_0) || p_theta(z_{t-1} | z_t, c)) for t >= 1."""
    eps, v = denoiser(zt, t, cond)
    return step_kl(schedule, z0, zt, t, eps, v, clip_x0)


def _eps_only(denoiser):
    return lambda z, t, c: denoiser(z, t, c)[0]


def kl_mask(kl: torch.Tensor, healthy_p95: torch.Tensor, subject_quantile: float = 0.95) -> torch.Tensor:
    """Elements whose KL exceeds both the subject's own quantile and the healthy cohort's per-element p95."""
    own = torch.quantile(kl.flatten(1).float(), subject_quantile, dim=1)
    return (kl > per_row(own, kl)) & (kl > healthy_p95)


@torch.no_grad()
def kl_guided_inpaint(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, cond: torch.Tensor,
                      levels: list[int], healthy_p95: torch.Tensor, steps: int, clip_x0: float,
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
    zt = schedule.q_sample(z_rep, t, generator)
    kl = denoiser_step_kl(schedule, denoiser, z_rep, zt, t, c_rep, clip_x0)
    mask = kl_mask(kl, healthy_p95.repeat(b, *([1] * (healthy_p95.dim() - 1))))
    restored = ddim_from_levels(_eps_only(denoiser), schedule, zt, t, c_rep, steps, clip_x0)
    stitched = torch.where(mask, restored, z_rep)
    shape = (b, n_lev, *z0.shape[1:])
    return stitched.view(shape).mean(1), mask.float().view(shape).mean(1)


@torch.no_grad()
def plain_restore(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, cond: torch.Tensor, level: int, steps: int,
                  clip_x0: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Baseline: noise the whole latent to one level and denoise it (no mask, no stitching)."""
    t = torch.full((z0.shape[0],), int(level), device=z0.device)
    return ddim_from_levels(_eps_only(denoiser), schedule, schedule.q_sample(z0, t, generator), t, cond, steps,
                            clip_x0)


@torch.no_grad()
def healthy_kl_quantile(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, cond: torch.Tensor, levels: list[int],
                        clip_x0: float, q: float = 0.95, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-level, per-element ``q`` quantile of the step KL over a healthy cohort: (levels, C, X, Y, Z)."""
    out = []
    for level in levels:
        t = torch.full((z0.shape[0],), int(level), device=z0.device)
        zt = schedule.q_sample(z0, t, generator)
        out.append(torch.quantile(denoiser_step_kl(schedule, denoiser, z0, zt, t, cond, clip_x0).float(), q, dim=0))
    return torch.stack(out)
