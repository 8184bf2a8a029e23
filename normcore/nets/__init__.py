"""Denoiser networks, one per file; each maps (x_t, t, cond) to predicted noise."""

import inspect

from normcore._utils.errors import InputError
from normcore.nets.film_mlp import FiLMMLP
from normcore.nets.saint import SAINT

BACKBONES = {"film-mlp": FiLMMLP, "saint": SAINT}


def check_backbone_params(name: str, params: dict) -> None:
    """Refuse, before any work, backbone settings that the network does not take (naming them)."""
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    signature = inspect.signature(BACKBONES[name].__init__)
    accepted = [p for p in signature.parameters if p not in ("self", "d_in", "d_cond")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(f"backbone parameter(s) {unknown} are not settings of {name}; it takes {accepted}")


def build_backbone(name: str, d_in: int, d_cond: int, **kwargs):
    """Instantiate a backbone by its public name (``film-mlp`` or ``saint``)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](d_in=d_in, d_cond=d_cond, **kwargs)


__all__ = ["FiLMMLP", "SAINT", "BACKBONES", "build_backbone", "check_backbone_params"]
