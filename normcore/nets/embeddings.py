"""Shared embedding layers for diffusion denoisers."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of integer diffusion timesteps."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[..., None] * self.freqs
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        if self.dim % 2:
            emb = torch.nn.functional.pad(emb, (0, 1))
        return emb


class ConditionEmbedding(nn.Module):
    """Joint embedding e(t, c) of the diffusion timestep and the covariates: SiLU(MLP(t) + MLP(c))."""

    def __init__(self, d_cond: int, dim: int):
        super().__init__()
        self.time = nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.cond = nn.Sequential(nn.Linear(d_cond, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(self.time(t) + self.cond(cond))


def broadcast_rows(e: torch.Tensor, x: torch.Tensor, keep: int = 1) -> torch.Tensor:
    """Insert singleton axes so a per-condition tensor (n, ...) broadcasts over x's sample axis.

    ``x`` is (n, dim) or (n, m, dim) (``keep`` trailing axes of ``e`` are feature axes).
    """
    while e.dim() - keep < x.dim() - 1:
        e = e.unsqueeze(1)
    return e
