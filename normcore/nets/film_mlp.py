"""FiLM-conditioned residual MLP denoiser for tabular diffusion."""

from __future__ import annotations

import torch
from torch import nn

from normcore.nets.embeddings import ConditionEmbedding, broadcast_rows


class FiLMBlock(nn.Module):
    """Pre-LayerNorm residual block whose normalised input is modulated by h * (1 + gamma) + beta."""

    def __init__(self, width: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(emb_dim, 2 * width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(width, width))

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = broadcast_rows(self.film(e), h).chunk(2, dim=-1)
        return h + self.mlp(torch.addcmul(beta, self.norm(h), 1 + gamma))


class FiLMMLP(nn.Module):
    """eps_theta(x_t, t, c): residual MLP with FiLM modulation from a time + covariate embedding.

    ``x`` is (n, d_in) or (n, m, d_in) (m samples sharing the n conditions); ``t`` is (n,) and
    ``cond`` (n, d_cond). Rows never interact, so outputs do not depend on batch composition.
    """

    def __init__(self, d_in: int, d_cond: int, width: int = 128, depth: int = 2, emb_dim: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        self.embed = ConditionEmbedding(d_cond, emb_dim)
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(FiLMBlock(width, emb_dim, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, d_in)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        e = self.embed(t, cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(self.out_norm(h))
