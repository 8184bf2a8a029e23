"""Classic per-IDP normative models behind the same interface as the diffusion model."""

from normcore.baselines.location_scale_shash import LocationScaleSHASH

__all__ = ["LocationScaleSHASH"]
