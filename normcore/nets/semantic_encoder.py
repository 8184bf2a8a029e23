"""Semantic encoder of a diffusion autoencoder: a 3D latent grid to one compact vector (DiffAE's z_sem)."""

from __future__ import annotations

import torch
from torch import nn

from normcore.nets.autoencoder3d import ResBlock3d, _norm


class SemanticEncoder3d(nn.Module):
    """Conv encoder from a (B, C, X, Y, Z) first-stage latent to a (B, dim) semantic vector.

    Two residual levels (the second at half resolution), adaptive average pooling to a 2x2x2 grid (so
    coarse position survives: left/right, front/back, top/bottom) and a linear map to ``dim``. It is trained
    only through the conditional denoiser's loss: it learns what the denoiser needs to reconstruct.
    """

    def __init__(self, in_channels: int, dim: int = 32, width: int = 32):
        super().__init__()
        self.dim = dim
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1), ResBlock3d(width, width),
            nn.Conv3d(width, 2 * width, 3, stride=2, padding=1), ResBlock3d(2 * width, 2 * width),
            _norm(2 * width), nn.SiLU(), nn.AdaptiveAvgPool3d(2))
        self.head = nn.Linear(2 * width * 8, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(z).flatten(1))
