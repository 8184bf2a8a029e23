"""Denoiser networks, one per file; each maps (x_t, t, cond) to predicted noise."""

from normcore.nets.film_mlp import FiLMMLP
from normcore.nets.saint import SAINT

BACKBONES = {"film-mlp": FiLMMLP, "saint": SAINT}


def build_backbone(name: str, d_in: int, d_cond: int, **kwargs):
    """Instantiate a backbone by its public name (``film-mlp`` or ``saint``)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](d_in=d_in, d_cond=d_cond, **kwargs)


__all__ = ["FiLMMLP", "SAINT", "BACKBONES", "build_backbone"]
