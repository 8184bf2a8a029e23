"""Training loops of the two stages: the KL autoencoder and the latent diffusion transformer."""

from __future__ import annotations

import numpy as np
import torch

from normcore._utils.progress import Progress
from normcore.diffusion.ema import EMA
from normcore.diffusion.likelihood import step_kl
from normcore.diffusion.schedule import NoiseSchedule
from normcore.nets.autoencoder3d import KLAutoencoder3d, kl_to_standard_normal, reconstruction_loss


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Left-right flip (axis 0 of the RAS grid) and a +-5% global intensity scale, per volume."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1, 1).to(x.device), x.flip(2), x)
    scale = 1 + 0.05 * (2 * torch.rand(x.shape[0], generator=gen) - 1)
    return x * scale.view(-1, 1, 1, 1, 1).to(x.device)


def train_autoencoder(ae: KLAutoencoder3d, volumes: torch.Tensor, epochs: int, batch_size: int, lr: float,
                      kl_weight: float, seed: int, progress: Progress) -> list[float]:
    """Fit the autoencoder on (N, 1, X, Y, Z) volumes with L1 + ``kl_weight`` * KL; returns epoch losses."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=0.0)
    n = volumes.shape[0]
    total = epochs * max(1, -(-n // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1)
    losses, step = [], 0
    ae.train()
    for _ in range(epochs):
        perm, acc = torch.randperm(n, generator=gen), []
        for i in range(0, n, batch_size):
            x = _augment(volumes[perm[i:i + batch_size]], gen)
            recon, mean, logvar = ae(x)
            loss = reconstruction_loss(recon, x) + kl_weight * kl_to_standard_normal(mean, logvar) / x[0].numel()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            acc.append(float(loss.detach()))
            step += 1
            progress.update("autoencoder", step, total, loss=acc[-1])
        losses.append(float(np.mean(acc)))
    ae.eval()
    return losses


def hybrid_loss(schedule: NoiseSchedule, denoiser, z0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor, vlb_weight: float, clip_x0: float) -> torch.Tensor:
    """||eps - eps_hat||^2 + vlb_weight * L_vlb (Nichol & Dhariwal 2021; the mean is detached in L_vlb)."""
    zt = schedule.add_noise(z0, noise, t)
    eps, v = denoiser(zt, t, cond)
    mse = (eps - noise).pow(2).mean()
    vlb = step_kl(schedule, z0, zt, t, eps.detach(), v, clip_x0)
    keep = (t >= 1).float().view(-1, *([1] * (z0.dim() - 1)))  # t = 0 has no Gaussian step (decoder term)
    return mse + vlb_weight * (vlb * keep).mean()


def train_denoiser(denoiser, schedule: NoiseSchedule, mean: torch.Tensor, logvar: torch.Tensor, cond: torch.Tensor,
                   steps: int, batch_size: int, lr: float, ema_decay: float, vlb_weight: float, clip_x0: float,
                   seed: int, progress: Progress) -> tuple[torch.nn.Module, list[float]]:
    """Fit the latent denoiser on posterior samples of the (scaled) training latents; returns EMA weights.

    A denoiser with a ``training_condition(cond, z0)`` method (a diffusion autoencoder) gets the covariates joined
    with what it derives from the clean latent being denoised, so its encoder is trained by the same loss (plus the
    auxiliary loss that method returns).
    """
    gen = torch.Generator().manual_seed(seed)
    device = mean.device
    opt = torch.optim.AdamW(denoiser.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    ema = EMA(denoiser, ema_decay)
    n, losses, window = mean.shape[0], [], []
    denoiser.train()
    semantic = hasattr(denoiser, "training_condition")
    for step in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen).to(device)
        z0 = mean[idx] + (0.5 * logvar[idx]).exp() * torch.randn(mean[idx].shape, generator=gen).to(device)
        t = torch.randint(0, schedule.timesteps, (batch_size,), generator=gen).to(device)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        c, aux = denoiser.training_condition(cond[idx], z0) if semantic else (cond[idx], 0.0)
        loss = hybrid_loss(schedule, denoiser, z0, c, t, noise, vlb_weight, clip_x0) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(denoiser, step)
        value = float(loss.detach())
        window.append(value)
        if (step + 1) % 50 == 0 or step + 1 == steps:
            losses.append(float(np.mean(window)))
            window = []
        progress.update("latent diffusion", step + 1, steps, loss=value)
    denoiser.eval()
    return ema.shadow, losses
