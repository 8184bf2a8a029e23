"""Proper scoring rules for predictive distributions given as samples."""

from __future__ import annotations

import numpy as np


def sample_crps(samples: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """The continuous ranked probability score of each observation under its own predictive samples.

    ``samples`` has shape (n, m, ...) (m >= 2 samples of each of n predictive distributions) and ``observed`` shape
    (n, ...); returns shape (n, ...). The "fair" estimator E|S - y| - E|S - S'| / 2 with the second expectation over
    distinct pairs, unbiased for the CRPS of the distribution the samples come from at any m (the plain estimator
    over all pairs favours under-dispersed samples by a term of order 1/m). Lower is better; for a fixed truth
    the expected score is lowest exactly for the true distribution (a strictly proper score).
    """
    s = np.sort(np.asarray(samples, float), axis=1)
    y = np.asarray(observed, float)
    m = s.shape[1]
    if m < 2:
        raise ValueError(f"sample_crps needs at least 2 samples per distribution, got {m}")
    # sum over pairs i < j of s_(j) - s_(i) = sum_k (2k - m - 1) s_(k) for the order statistics s_(1..m)
    weights = (2 * np.arange(1, m + 1) - m - 1).reshape((1, m) + (1,) * (s.ndim - 2))
    mean_pair_gap = 2.0 / (m * (m - 1)) * (weights * s).sum(axis=1)
    return np.abs(s - y[:, None]).mean(axis=1) - 0.5 * mean_pair_gap
