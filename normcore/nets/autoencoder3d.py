"""First-stage 3D KL-regularised autoencoder (the LDM/CADD image compressor)."""

from __future__ import annotations

import torch
from torch import nn


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock3d(nn.Module):
    """GroupNorm-SiLU-Conv x2 with a residual connection (1x1 conv when channels change)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.block = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv3d(c_in, c_out, 3, padding=1),
                                   _norm(c_out), nn.SiLU(), nn.Conv3d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)


class KLAutoencoder3d(nn.Module):
    """Conv encoder to a diagonal Gaussian latent (mean, log-variance) and a conv decoder back.

    ``channels`` lists the widths per resolution level; each level after the first halves every
    spatial axis, so the latent grid is the image grid divided by 2**(len(channels) - 1).
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32), latent_channels: int = 4):
        super().__init__()
        self.channels = tuple(channels)
        self.latent_channels = latent_channels
        enc: list[nn.Module] = [nn.Conv3d(1, channels[0], 3, padding=1), ResBlock3d(channels[0], channels[0])]
        for c_prev, c in zip(channels[:-1], channels[1:], strict=True):
            enc += [nn.Conv3d(c_prev, c, 3, stride=2, padding=1), ResBlock3d(c, c)]
        enc += [_norm(channels[-1]), nn.SiLU(), nn.Conv3d(channels[-1], 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv3d(latent_channels, channels[-1], 3, padding=1),
                                ResBlock3d(channels[-1], channels[-1])]
        for c, c_next in zip(channels[::-1][:-1], channels[::-1][1:], strict=True):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv3d(c, c_next, 3, padding=1),
                    ResBlock3d(c_next, c_next)]
        dec += [_norm(channels[0]), nn.SiLU(), nn.Conv3d(channels[0], 1, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (B, latent_channels, X/f, Y/f, Z/f)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, posterior mean and log-variance (reparameterised sample when ``sample``)."""
        mean, logvar = self.encode(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return self.decode(z), mean, logvar


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), summed over latent elements, averaged over the batch."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error, optionally weighted per voxel (e.g. up-weighting the brain)."""
    err = (recon - x).abs()
    if weight is None:
        return err.mean()
    return (err * weight).sum() / weight.sum().clamp(min=1.0)


__all__ = ["KLAutoencoder3d", "ResBlock3d", "kl_to_standard_normal", "reconstruction_loss"]
