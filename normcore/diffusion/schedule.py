"""Discrete-time Gaussian noise schedules (cosine, linear) for DDPM-style diffusion."""

from __future__ import annotations

import math

import torch


class NoiseSchedule:
    """Forward process x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t = 0..T-1.

    ``kind="cosine"`` (Nichol & Dhariwal 2021) with its angle scaled so that abar_T = ``min_abar``
    (the terminal signal stays negligible while the first reverse steps do not divide by a tiny
    sqrt(abar_T)); or ``"linear"`` (Ho et al. 2020, betas 1e-4..0.02 scaled to T).
    """

    min_abar = 1e-4

    def __init__(self, kind: str = "cosine", timesteps: int = 1000):
        if kind not in ("cosine", "linear"):
            raise ValueError(f"unknown schedule {kind!r}; use cosine or linear")
        self.kind = kind
        self.timesteps = int(timesteps)
        t = torch.arange(self.timesteps + 1, dtype=torch.float64)
        if kind == "cosine":
            s = 0.008
            f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
            end = math.acos(math.sqrt(self.min_abar * f0)) / (math.pi / 2) * (1 + s) - s  # angle where abar = min
            f = torch.cos((t / self.timesteps * end + s) / (1 + s) * math.pi / 2) ** 2
            abar = f / f[0]
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        else:
            scale = 1000 / self.timesteps
            betas = torch.linspace(scale * 1e-4, scale * 0.02, self.timesteps, dtype=torch.float64)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "timesteps": self.timesteps}

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """abar_t for integer timesteps (float32 on t's device); t = -1 gives 1 (clean data)."""
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod]).to(t.device)
        return table[t.long() + 1].float()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) given the noise."""
        a = self.abar(t).view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) with fresh noise (from ``generator`` when given)."""
        noise = torch.randn(x0.shape, generator=generator, device=x0.device) if generator is not None \
            else torch.randn_like(x0)
        return self.add_noise(x0, noise, t)

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                  t_prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t_prev} | x_t, x_0) (t_prev = t-1 by default; -1 is x_0)."""
        if t_prev is None:
            t_prev = t - 1
        shape = (-1, *([1] * (x0.dim() - 1)))
        a_t, a_p = self.abar(t).view(shape), self.abar(t_prev).view(shape)
        alpha = a_t / a_p
        var = (1 - a_p) / (1 - a_t) * (1 - alpha)
        mean = (a_p.sqrt() * (1 - alpha) / (1 - a_t)) * x0 + (alpha.sqrt() * (1 - a_p) / (1 - a_t)) * xt
        return mean, var.expand_as(xt)

    def posterior_log_variance(self, t: torch.Tensor) -> torch.Tensor:
        """log of the variance of q(x_{t-1} | x_t, x_0), with t = 0 clipped to t = 1 (where it is 0), as in
        improved DDPM."""
        t = t.long().clamp(min=1)
        a_t, a_p = self.abar(t), self.abar(t - 1)
        return torch.log((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))

    def log_snr(self) -> torch.Tensor:
        """lambda_t = log(alpha_t / sigma_t) for t = 0..T-1 (decreasing)."""
        return 0.5 * torch.log(self.alphas_cumprod / (1 - self.alphas_cumprod))

    def respaced_log_snr(self, steps: int, start: float | None = None) -> torch.Tensor:
        """Descending timesteps spaced uniformly in log-SNR (the spacing DPM-Solver is designed for).

        ``start`` (a log-SNR above the schedule's end): the chain's first step goes from T-1 straight to
        ``start`` and the others are spaced uniformly from there to t = 0, so that no steps are spent where
        the signal is a negligible share of x_t. ``None``: uniform over the whole range.
        """
        lam = self.log_snr()
        lo, hi, n = float(lam[-1]), float(lam[0]), max(2, int(steps))
        if start is None or start <= lo:
            targets = torch.linspace(lo, hi, n, dtype=torch.float64)
        elif start >= hi:
            raise ValueError(f"log-SNR start {start:g} is not below the schedule's cleanest level {hi:.3g}")
        else:
            targets = torch.cat([torch.tensor([lo], dtype=torch.float64),
                                 torch.linspace(start, hi, n - 1, dtype=torch.float64)])
        idx = torch.searchsorted(-lam.contiguous(), -targets.contiguous()).clamp(max=self.timesteps - 1)
        idx[0], idx[-1] = self.timesteps - 1, 0
        return torch.unique_consecutive(idx)

    def respaced(self, steps: int) -> torch.Tensor:
        """Descending timesteps of a respaced chain of ``steps`` steps (from T-1 down to 0)."""
        steps = max(1, min(int(steps), self.timesteps))
        ts = torch.linspace(self.timesteps - 1, 0, steps).round().long()
        return torch.unique_consecutive(ts)
