"""Exponential moving average of a network's weights: the weights every sampler uses."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of ``module`` whose parameters follow the trained ones with ``decay``.

    Early steps use min(decay, (1 + step) / (10 + step)) so the average starts from the trained weights.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        src = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(list(self.shadow.parameters()), src, 1 - decay)
