"""Classic per-IDP normative models on the same protocol as the diffusion model."""

from normcore.tabular.baselines.pcntoolkit_blr import PCNToolkitBLR, pcntoolkit_available
from normcore.tabular.baselines.shash_baseline import LocationScaleSHASH

__all__ = ["LocationScaleSHASH", "PCNToolkitBLR", "pcntoolkit_available"]
