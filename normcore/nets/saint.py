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
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # (B, L, dim) each
        if not across_rows:
            return self.out(v)
        b, length, dim = v.shape
        split = lambda z: z.permute(1, 0, 2).reshape(length, b, self.heads, dim // self.heads).transpose(1, 2)
        att = F.scaled_dot_product_attention(split(q), split(k), split(v))  # (L, heads, B, hd)
        return self.out(att.transpose(1, 2).reshape(length, b, dim).permute(1, 0, 2))


class SAINTBlock(nn.Module):
    """Pre-LN transformer block: feature attention + FFN, then row attention + FFN."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.feature_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff1 = _feed_forward(dim, ff_mult, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.row_attn = RowAttention(dim, heads)
        self.ff2 = _feed_forward(dim, ff_mult, dropout)

    def forward(self, h: torch.Tensor, across_rows: bool) -> torch.Tensor:
        z = self.norm1(h)
        h = h + self.feature_attn(z, z, z, need_weights=False)[0]
        h = h + self.ff1(h)
        h = h + self.row_attn(self.norm2(h), across_rows)
        return h + self.ff2(h)


def _feed_forward(dim: int, mult: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(mult * dim, dim))


class SAINT(nn.Module):
    """eps_theta(x_t, t, c) with one token per IDP plus a condition token.

    Each IDP value becomes a token ``x_j * w_j + b_j`` (per-feature embedding, ``b_j`` acting as the
    column embedding) shifted by a projection of the time/covariate embedding. During training, row
    (intersample) attention is used on a random fraction ``row_attention_prob`` of the steps; otherwise,
    and always in eval mode, rows attend only to themselves, so f(X)[i] == f(X[i:i+1]).
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
        tokens = xf[..., None] * self.token_weight + self.token_bias + self.cond_shift(e)[:, None, :]
        h = torch.cat([self.cond_token(e)[:, None, :], tokens], dim=1)
        if across_rows is None:
            across_rows = self.training and bool(torch.rand(()) < self.row_attention_prob)
        for block in self.blocks:
            h = block(h, across_rows)
        return self.out(self.out_norm(h[:, 1:])).squeeze(-1).reshape(*lead, self.d_in)
