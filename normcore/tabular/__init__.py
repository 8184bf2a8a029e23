"""Tabular normative modelling with conditional diffusion."""

from normcore.tabular.model import NormativeDiffusion

__all__ = ["NormativeDiffusion"]
