"""Tabular normative modelling with conditional diffusion."""

from normcore.tabular.diffusion_model import NormativeDiffusion

__all__ = ["NormativeDiffusion"]
