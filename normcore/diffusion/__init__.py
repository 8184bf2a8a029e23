"""The diffusion core shared by the tabular and imaging models, independent of any network.

Noise schedules and the forward process (:mod:`.schedule`), reverse samplers including partial chains
from given noise levels (:mod:`.samplers`), per-step likelihood terms with a learned variance
(:mod:`.likelihood`), the Gaussian-prior residual parameterisation (:mod:`.parameterisation`) and the
EMA of weights (:mod:`.ema`).
"""

from normcore.diffusion.ema import EMA
from normcore.diffusion.likelihood import gaussian_kl, reverse_step, step_kl, x0_from_eps
from normcore.diffusion.parameterisation import CovariateTrend, GaussianPriorResidual, GaussianResidual, wrap_denoiser
from normcore.diffusion.samplers import (
    SAMPLERS,
    ddim_decode,
    ddim_from_levels,
    ddim_invert,
    ddim_sample,
    ddpm_sample,
    sample,
)
from normcore.diffusion.schedule import NoiseSchedule

__all__ = ["EMA", "SAMPLERS", "CovariateTrend", "GaussianPriorResidual", "GaussianResidual", "NoiseSchedule",
           "ddim_decode", "ddim_from_levels", "ddim_invert", "ddim_sample", "ddpm_sample", "gaussian_kl",
           "reverse_step", "sample", "step_kl", "wrap_denoiser", "x0_from_eps"]
