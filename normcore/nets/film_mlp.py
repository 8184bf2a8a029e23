"""FiLM-conditioned residual MLP denoiser for tabular diffusion."""

from __future__ import annotations

import math

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


MARGINAL_WIDTH_ROWS = 2500  # training rows from which the per-IDP path widens with the data


def auto_marginal_width(d_in: int, n_rows: int = 0) -> int:
    """Width of the per-IDP path: 32 up to 32 IDPs, then shrinking as 1/sqrt(D) (at least 8), which keeps the
    path's multiply-adds per row (D x width^2) near 32^3, about half the joint MLP's; with more than
    ``MARGINAL_WIDTH_ROWS`` training rows it grows back as sqrt(n_rows / MARGINAL_WIDTH_ROWS), up to 32, since more
    rows resolve sharper per-IDP shapes (a bimodal IDP's two modes) than a narrow path can learn (BENCHMARKS.md).
    """
    grow = math.sqrt(max(1.0, n_rows / MARGINAL_WIDTH_ROWS))
    return int(min(32, max(8, round(32 * math.sqrt(32 / max(d_in, 1)) * grow))))


class MarginalPath(nn.Module):
    """Per-IDP denoising path: a small MLP of each IDP's own value, with weights shared across IDPs.

    IDP j's output depends only on (x_j, an embedding of j, the time + covariate embedding), so the
    marginal shape of every IDP (skew, multimodality, and how they change with age) is learnt with the
    sample efficiency of a one-dimensional model, while the joint MLP beside it learns the dependence
    (why it exists: README; its effect: BENCHMARKS.md).
    """

    block_elements = 1 << 18  # CPU: activations per block of rows, small enough to stay in cache

    def __init__(self, d_in: int, emb_dim: int, width: int):
        super().__init__()
        self.idp = nn.Parameter(torch.randn(d_in, width) * 0.5)
        self.value = nn.Parameter(torch.randn(width))
        self.film = nn.Linear(emb_dim, 2 * width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(e).chunk(2, dim=-1)  # (n, width): per condition, shared by its samples
        # first layer folded per condition: (x v + E_j)(1 + gamma) + beta = x A + B_j, laid out width-major
        scale = (1 + gamma).t()  # (width, n)
        offset = self.idp.t().unsqueeze(1) * scale.unsqueeze(2) + beta.t().unsqueeze(2)  # (width, n, d)
        slope = (self.value.unsqueeze(1) * scale).unsqueeze(2)  # (width, n, 1)
        if x.dim() == 3:  # (n, m, d): a condition's m samples share its offset and slope
            offset, slope = offset.unsqueeze(2), slope.unsqueeze(2)
        out = torch.empty_like(x)
        write = not torch.is_grad_enabled()  # results go straight into ``out`` (not possible under autograd)
        per_row = x.shape[-1] * self.idp.shape[1]  # activations of one row
        x_rows = x.shape[1] if x.dim() == 3 else 1
        if not x.is_cuda and x_rows * per_row > self.block_elements:  # one condition's samples exceed a block
            rows = max(1, self.block_elements // per_row)
            blocks = [((s, slice(r, r + rows)), (slice(None), s)) for s in range(x.shape[0])
                      for r in range(0, x_rows, rows)]
        else:  # on a GPU one launch per layer is faster than cache-sized blocks of rows
            step = x.shape[0] if x.is_cuda else max(1, self.block_elements // (per_row * x_rows))
            blocks = [((slice(s, s + step),), (slice(None), slice(s, s + step))) for s in range(0, x.shape[0], step)]
        for rows_of_x, conditions in blocks:
            target = out[rows_of_x]
            result = self._layers(x[rows_of_x], offset[conditions], slope[conditions], into=target if write else None)
            if result is not target:
                out[rows_of_x] = result
        return out

    def _layers(self, x: torch.Tensor, offset: torch.Tensor, slope: torch.Tensor,
                into: torch.Tensor | None = None) -> torch.Tensor:
        """The path on rows ``x`` (..., D) given the first layer's ``offset`` (width, ..., D) and ``slope``
        (width, ..., 1), which broadcast against them. The result (shaped like ``x``) is written to the contiguous
        ``into`` when one is given (outside autograd) of the computation's dtype (under autocast it is not), else
        returned. Computed width-major, (width, ..., D), so the width-sized products run over long contiguous rows
        and the biases broadcast along them rather than over a width-sized inner axis (speed: BENCHMARKS.md)."""
        h = torch.addcmul(offset.contiguous(), x.unsqueeze(0), slope.contiguous())
        inplace = not torch.is_grad_enabled()
        h = nn.functional.silu(h, inplace=inplace).reshape(len(h), -1)
        h = nn.functional.silu(torch.addmm(self.hidden.bias.unsqueeze(1), self.hidden.weight, h), inplace=inplace)
        if into is None or into.dtype != h.dtype:
            return torch.addmm(self.out.bias.unsqueeze(1), self.out.weight, h).view(x.shape)
        torch.addmm(self.out.bias.unsqueeze(1), self.out.weight, h, out=into.view(1, -1))
        return into


class FiLMMLP(nn.Module):
    """eps_theta(x_t, t, c): residual MLP with FiLM modulation from a time + covariate embedding.

    ``x`` is (n, d_in) or (n, m, d_in) (m samples sharing the n conditions); ``t`` is (n,) and
    ``cond`` (n, d_cond). Rows never interact, so outputs do not depend on batch composition.
    ``marginal_width``: width of the per-IDP path (:class:`MarginalPath`); ``None`` picks
    :func:`auto_marginal_width` of ``d_in`` alone (a fit passes its own, which knows the training rows), 0 leaves it
    out (the architecture of models saved before it existed).
    """

    def __init__(self, d_in: int, d_cond: int, width: int = 128, depth: int = 2, emb_dim: int = 128,
                 dropout: float = 0.0, marginal_width: int | None = None):
        super().__init__()
        self.embed = ConditionEmbedding(d_cond, emb_dim)
        if marginal_width is None:
            marginal_width = auto_marginal_width(d_in)
        self.marginal = MarginalPath(d_in, emb_dim, marginal_width) if marginal_width else None
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
        out = self.out(self.out_norm(h))
        return out + self.marginal(x, e) if self.marginal is not None else out
