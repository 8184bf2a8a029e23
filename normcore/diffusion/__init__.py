"""Diffusion process: noise schedules and samplers, independent of any network."""

from normcore.diffusion.parameterisation import GaussianResidual, wrap_denoiser
from normcore.diffusion.samplers import ddim_sample, ddpm_sample, sample
from normcore.diffusion.schedule import NoiseSchedule

__all__ = ["GaussianResidual", "wrap_denoiser", "NoiseSchedule", "ddpm_sample", "ddim_sample", "sample"]
