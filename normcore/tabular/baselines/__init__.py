"""Classic per-IDP normative models behind the same interface as the diffusion model."""

from normcore.tabular.baselines.shash_baseline import LocationScaleSHASH

__all__ = ["LocationScaleSHASH"]
