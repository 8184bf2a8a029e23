"""The diffusion core shared by the tabular and imaging models, independent of any network.

Noise schedules and the forward process (:mod:`.schedule`), reverse samplers including partial chains
from given noise levels (:mod:`.samplers`), the pseudo-random or quasi-random noise they draw (:mod:`.noise`),
per-step likelihood terms with a learned variance (:mod:`.likelihood`), the Gaussian-prior residual
parameterisation (:mod:`.parameterisation`) and the EMA of weights (:mod:`.ema`).
"""

from normcore.diffusion.ema import EMA
from normcore.diffusion.likelihood import gaussian_kl, reverse_step, step_kl, x0_from_eps
from normcore.diffusion.noise import NoiseSource, PseudoRandom, ScrambledSobol, noise_draws
from normcore.diffusion.parameterisation import (
    CovariateTrend,
    GaussianCopulaResidual,
    GaussianPriorResidual,
    GaussianResidual,
    wrap_denoiser,
)
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

__all__ = ["EMA", "SAMPLERS", "CovariateTrend", "GaussianCopulaResidual", "GaussianPriorResidual", "GaussianResidual",
           "NoiseSchedule", "NoiseSource", "PseudoRandom", "ScrambledSobol", "ddim_decode", "ddim_from_levels",
           "ddim_invert", "ddim_sample", "ddpm_sample", "gaussian_kl", "noise_draws", "reverse_step", "sample",
           "step_kl", "wrap_denoiser", "x0_from_eps"]
