"""Latent diffusion transformer (DiT-style) with adaptive layer norm and learned variance."""

from __future__ import annotations

import torch
from torch import nn

from normcore.nets.embeddings import SinusoidalEmbedding


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms take shift/scale/gate from the condition (adaLN-Zero)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        z = _modulate(self.norm1(h), sh1, sc1)
        h = h + g1[:, None] * self.attn(z, z, z, need_weights=False)[0]
        return h + g2[:, None] * self.mlp(_modulate(self.norm2(h), sh2, sc2))


class LatentTransformer(nn.Module):
    """Denoiser over 3D latent patches conditioned on timestep, age and sex.

    Input (B, C, X, Y, Z) latents; tokens are non-overlapping ``patch``^3 cubes with a learned position
    embedding. The condition vector is MLP(sinusoidal(t)) + MLP(covariates). The output has 2C
    channels: predicted noise and a variance interpolation v in [-1, 1] (Nichol & Dhariwal 2021:
    log sigma^2 = (v+1)/2 log beta_t + (1-v)/2 log beta_tilde_t), which the KL mask needs.
    """

    def __init__(self, latent_shape: tuple[int, int, int, int], d_cond: int = 2, patch: int = 2, dim: int = 128,
                 depth: int = 4, heads: int = 4):
        super().__init__()
        c, *spatial = latent_shape
        if any(s % patch for s in spatial):
            raise ValueError(f"latent grid {spatial} is not divisible by patch {patch}")
        self.latent_shape = tuple(latent_shape)
        self.patch = patch
        self.grid = tuple(s // patch for s in spatial)
        n_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        token_in = c * patch ** 3
        self.embed = nn.Linear(token_in, dim)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)
        self.time = nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.cond = nn.Sequential(nn.Linear(d_cond, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(AdaLNBlock(dim, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.out = nn.Linear(dim, 2 * token_in)
        for layer in (self.final_ada[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _patchify(self, z: torch.Tensor) -> torch.Tensor:
        b, c = z.shape[:2]
        p, (gx, gy, gz) = self.patch, self.grid
        z = z.reshape(b, c, gx, p, gy, p, gz, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return z.reshape(b, gx * gy * gz, c * p ** 3)

    def _unpatchify(self, tokens: torch.Tensor, channels: int) -> torch.Tensor:
        b = tokens.shape[0]
        p, (gx, gy, gz) = self.patch, self.grid
        z = tokens.reshape(b, gx, gy, gz, channels, p, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return z.reshape(b, channels, gx * p, gy * p, gz * p)

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted noise (B, C, ...) and variance interpolation v in [-1, 1] (B, C, ...)."""
        c = self.time(t) + self.cond(cond)
        h = self.embed(self._patchify(z)) + self.pos
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        out = self._unpatchify(self.out(_modulate(self.final_norm(h), shift, scale)), 2 * self.latent_shape[0])
        eps, v = out.chunk(2, dim=1)
        return eps, torch.tanh(v)
