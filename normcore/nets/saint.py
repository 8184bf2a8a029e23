"""SAINT-style transformer denoiser: per-IDP tokens, feature self-attention, intersample attention."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from normcore.nets.embeddings import ConditionEmbedding


class RowAttention(nn.Module):
    """Intersample attention: each token attends to the same token position of the other rows.

    In per-row mode every row attends only to itself, which reduces exactly to ``out(v(h))`` with the
    same weights, so a model trained partly with row attention can be evaluated row by row.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, across_rows: bool) -> torch.Tensor:
        dim = h.shape[-1]
        if not across_rows:  # only the value projection matters
            return self.out(F.linear(h, self.qkv.weight[2 * dim:], self.qkv.bias[2 * dim:]))
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # (B, L, dim) each
        b, length, _ = v.shape
        split = lambda z: z.permute(1, 0, 2).reshape(length, b, self.heads, dim // self.heads).transpose(1, 2)
        att = F.scaled_dot_product_attention(split(q), split(k), split(v))  # (L, heads, B, hd)
        return self.out(att.transpose(1, 2).reshape(length, b, dim).permute(1, 0, 2))


class FeatureAttention(nn.Module):
    """Multi-head self-attention across a row's tokens through PyTorch's fused kernel
    (:func:`torch.nn.functional.scaled_dot_product_attention`).

    Parameters are named and laid out as in :class:`torch.nn.MultiheadAttention` (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``), which it replaces with the same function: saved SAINT models load
    unchanged. Skipping MultiheadAttention's generic argument handling and head reshapes made sampling
    faster (BENCHMARKS.md, SAINT section).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, length, dim = h.shape
        qkv = F.linear(h, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, hd)
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(att.transpose(1, 2).reshape(b, length, dim))


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v written out: the definition the fused kernels are tested against."""
    weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
    return weights @ v


class SAINTBlock(nn.Module):
    """Pre-LN transformer block: feature attention + FFN, then row attention + FFN."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.feature_attn = FeatureAttention(dim, heads, dropout)
        self.ff1 = _feed_forward(dim, ff_mult, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.row_attn = RowAttention(dim, heads)
        self.ff2 = _feed_forward(dim, ff_mult, dropout)

    def forward(self, h: torch.Tensor, across_rows: bool) -> torch.Tensor:
        h = h + self.feature_attn(self.norm1(h))
        h = h + self.ff1(h)
        h = h + self.row_attn(self.norm2(h), across_rows)
        return h + self.ff2(h)


def _feed_forward(dim: int, mult: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(mult * dim, dim))


CPU_BLOCK_ELEMENTS = 1 << 19
"""Activations (rows x tokens x width) per block of an inference pass on the CPU: blocks this size stay in the
caches, which made the forward pass at D = 50-213 about 2x faster than 4096-row blocks (BENCHMARKS.md)."""


class SAINT(nn.Module):
    """eps_theta(x_t, t, c) with one token per IDP plus a condition token.

    Each IDP value becomes a token ``x_j * w_j + b_j`` (per-feature embedding, ``b_j`` acting as the
    column embedding) shifted by a projection of the time/covariate embedding. During training, row
    (intersample) attention is used on a random fraction ``row_attention_prob`` of the steps; otherwise,
    and always in eval mode, rows attend only to themselves, so f(X)[i] == f(X[i:i+1]); CPU inference then
    runs in cache-sized blocks of rows (``CPU_BLOCK_ELEMENTS``).
    """

    def __init__(self, d_in: int, d_cond: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 ff_mult: int = 2, dropout: float = 0.0, emb_dim: int = 128, row_attention_prob: float = 0.5):
        super().__init__()
        self.d_in = d_in
        self.row_attention_prob = row_attention_prob
        self.embed = ConditionEmbedding(d_cond, emb_dim)
        self.token_weight = nn.Parameter(torch.randn(d_in, dim) * 0.5)
        self.token_bias = nn.Parameter(torch.randn(d_in, dim) * 0.02)
        self.cond_token = nn.Linear(emb_dim, dim)
        self.cond_shift = nn.Linear(emb_dim, dim)
        self.blocks = nn.ModuleList(SAINTBlock(dim, heads, ff_mult, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                across_rows: bool | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        e = self.embed(t, cond)  # (n, emb)
        if x.dim() == 3:  # (n, m, d): repeat the condition embedding over the m samples
            e = e[:, None, :].expand(lead[0], lead[1], e.shape[-1])
        e = e.reshape(-1, e.shape[-1])
        xf = x.reshape(-1, self.d_in)
        if across_rows is None:
            across_rows = self.training and bool(torch.rand(()) < self.row_attention_prob)
        block = len(xf)
        if not across_rows and not torch.is_grad_enabled() and x.device.type == "cpu":
            block = max(8, CPU_BLOCK_ELEMENTS // ((self.d_in + 1) * self.token_weight.shape[1]))
        parts = [self._rows(xf[s:s + block], e[s:s + block], across_rows) for s in range(0, len(xf), block)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).reshape(*lead, self.d_in)

    def _rows(self, xf: torch.Tensor, e: torch.Tensor, across_rows: bool) -> torch.Tensor:
        """The network on (rows, d) values and their (rows, emb) condition embeddings."""
        tokens = xf[..., None] * self.token_weight + self.token_bias + self.cond_shift(e)[:, None, :]
        h = torch.cat([self.cond_token(e)[:, None, :], tokens], dim=1)
        for block in self.blocks:
            h = block(h, across_rows)
        return self.out(self.out_norm(h[:, 1:])).squeeze(-1)
