"""Each row's predictive distribution summarised as a mixture of an IDP's floor, its ceiling and its body.

An IDP with point masses (:mod:`~normcore.tabular.point_masses`) has a predictive distribution that is part
discrete, part continuous: probability ``floor_share`` at the floor, ``ceiling_share`` at the ceiling and the rest
spread between them (the body). Its mean and variance alone hide that: a log loss computed from them treats a 0
that 99% of people have like any other value. :class:`PredictiveMixture` keeps the parts apart, so that
``evaluate`` can score held-out values under the mixture (:func:`normcore.metrics.point_mass_log_loss`) and still
report the mixture's moments. For an IDP without bounds the shares are 0 and the body is the whole distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PredictiveMixture:
    """Per row and IDP (arrays (n, D)): the probabilities of the floor and the ceiling, and the mean and variance of
    the body (the values strictly between them); ``floor`` and ``ceiling`` (D,) are the bounds (NaN: none).

    ``body_samples`` (n, D), where the body's moments were estimated from samples: how many samples they rest on
    (about the body's probability times the samples drawn); None where they are exact. A body the model drew (almost)
    no values of has moments that mean little; its mean and variance are then 0 and are not to be used alone.
    """

    floor: np.ndarray
    ceiling: np.ndarray
    floor_share: np.ndarray
    ceiling_share: np.ndarray
    body_mean: np.ndarray
    body_var: np.ndarray
    body_samples: np.ndarray | None = None

    @classmethod
    def continuous(cls, mean: np.ndarray, var: np.ndarray) -> PredictiveMixture:
        """The mixture of a model without point masses: no bounds, the body is the whole distribution."""
        mean, var = np.asarray(mean, float), np.asarray(var, float)
        nan = np.full(mean.shape[-1], np.nan)
        zeros = np.zeros_like(mean)
        return cls(nan, nan, zeros, zeros, mean, var)

    @property
    def body_share(self) -> np.ndarray:
        """(n, D) the probability of the values between the bounds."""
        return 1.0 - self.floor_share - self.ceiling_share

    @property
    def mean(self) -> np.ndarray:
        """(n, D) the mixture's mean."""
        floor, ceiling = np.nan_to_num(self.floor), np.nan_to_num(self.ceiling)
        return self.floor_share * floor + self.ceiling_share * ceiling + self.body_share * self.body_mean

    @property
    def var(self) -> np.ndarray:
        """(n, D) the mixture's variance: the body's, plus the spread of the floor, the ceiling and the body's mean
        about the mixture's mean (centred, so an IDP without bounds has exactly its body's variance)."""
        floor, ceiling, mean = np.nan_to_num(self.floor), np.nan_to_num(self.ceiling), self.mean
        return (self.floor_share * (floor - mean) ** 2 + self.ceiling_share * (ceiling - mean) ** 2
                + self.body_share * (self.body_var + (self.body_mean - mean) ** 2))
