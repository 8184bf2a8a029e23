"""Image restoration and anomaly detection metrics on voxel arrays (numpy, vectorised).

Restoration: :func:`mae`, :func:`psnr`, :func:`ssim3d` compare a restored (pseudo-healthy) volume with the truth.
Detection: :func:`voxel_auprc`, :func:`best_dice`, :func:`dice` score voxel anomaly maps against lesion masks and
:func:`subject_auc` scores a subject-level anomaly index against labels. ``mask`` arguments restrict a metric to
the voxels where the mask is true (typically the brain); they broadcast against the data (one brain mask for a batch).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from sklearn.metrics import average_precision_score, roc_auc_score

from normcore._utils.errors import InputError

SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_TRUNCATE = 3.5  # sigma 1.5 -> an 11-voxel window, as in Wang et al. (2004)


def _select(mask: np.ndarray | None, shape: tuple[int, ...], *arrays: np.ndarray) -> list[np.ndarray]:
    """The arrays' values inside ``mask`` (all of them without one), as flat arrays."""
    for arr in arrays:
        if arr.shape != shape:
            raise InputError(f"array shapes differ: {arr.shape} vs {shape}")
    if mask is None:
        return [arr.ravel() for arr in arrays]
    try:
        m = np.broadcast_to(np.asarray(mask, bool), shape)
    except ValueError:
        raise InputError(f"mask of shape {np.shape(mask)} does not match data of shape {shape}") from None
    return [arr[m] for arr in arrays]


def mae(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error between ``a`` and ``b`` (inside ``mask``)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    x, y = _select(mask, a.shape, a, b)
    return float(np.mean(np.abs(x - y))) if x.size else float("nan")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range**2 / MSE)``; ``inf`` for identical inputs."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    x, y = _select(mask, a.shape, a, b)
    if not x.size:
        return float("nan")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim3d(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0,
           sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two 3-D volumes with a Gaussian window, averaged over ``mask``.

    Local means, variances and covariance use an isotropic Gaussian window (SD ``sigma`` voxels, truncated at 3.5 SD:
    11 voxels wide for 1.5; edges reflected) computed over the whole volume;
    ``C1 = (0.01 L)**2`` and ``C2 = (0.03 L)**2`` with ``L = data_range``. 1 for identical volumes.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 3:
        raise InputError(f"ssim3d needs 3-D volumes, got shape {a.shape} (loop over a batch)")
    if a.shape != b.shape:
        raise InputError(f"array shapes differ: {a.shape} vs {b.shape}")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    def filt(x: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(x, sigma, mode="reflect", truncate=SSIM_TRUNCATE)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    (vals,) = _select(mask, a.shape, smap)
    return float(np.mean(vals)) if vals.size else float("nan")


def _scores_truth(scores: np.ndarray, truth: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, float)
    truth = np.asarray(truth)
    if truth.shape != scores.shape:
        raise InputError(f"scores {scores.shape} and truth {truth.shape} shapes differ")
    s, t = _select(mask, scores.shape, scores, truth.astype(bool))
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or infinite values inside the mask")
    return s, t


def voxel_auprc(scores: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Area under the precision-recall curve (average precision) of voxel ``scores`` for the binary ``truth``.

    Arrays of any shape (e.g. a batch of subjects: voxels are pooled); NaN when there is no positive voxel.
    A perfect ranking gives 1, a random one the prevalence of positives.
    """
    s, t = _scores_truth(scores, truth, mask)
    if not t.any():
        return float("nan")
    return float(average_precision_score(t, s))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2|A & B| / (|A| + |B|)`` of two binary masks; 1 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise InputError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def best_dice(scores: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None,
              n_thresholds: int | None = 100) -> tuple[float, float]:
    """The best Dice of ``scores >= threshold`` against ``truth`` over thresholds, and that threshold.

    Thresholds are ``n_thresholds`` evenly spaced values from the lowest to the highest score (inside ``mask``),
    or every distinct score with ``n_thresholds=None`` (exact). Computed for all thresholds at once from the sorted
    scores and the cumulative count of true voxels. Arrays of any shape (voxels pooled); ``(nan, nan)`` when
    ``truth`` has no positive voxel.
    """
    s, t = _scores_truth(scores, truth, mask)
    n_pos = int(t.sum())
    if n_pos == 0 or s.size == 0:
        return float("nan"), float("nan")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    # Positives at or above position i of the ascending order: suffix sums of the truth.
    tp_from = np.r_[np.cumsum(t[order][::-1])[::-1], 0]
    if n_thresholds is None:
        thresholds = np.unique(s_sorted)
    else:
        if int(n_thresholds) < 1:
            raise InputError(f"n_thresholds must be >= 1, got {n_thresholds}")
        thresholds = np.linspace(s_sorted[0], s_sorted[-1], int(n_thresholds))
    first = np.searchsorted(s_sorted, thresholds, side="left")  # first index with score >= threshold
    predicted = s.size - first
    tp = tp_from[first]
    scores_dice = 2.0 * tp / (predicted + n_pos)
    best = int(np.argmax(scores_dice))
    return float(scores_dice[best]), float(thresholds[best])


def subject_auc(index: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of a subject-level anomaly ``index`` (higher = more anomalous) for binary ``labels`` (1 = patient)."""
    index, labels = np.asarray(index, float).ravel(), np.asarray(labels).ravel()
    if index.shape != labels.shape:
        raise InputError(f"got {index.size} index values but {labels.size} labels")
    y = labels.astype(bool)
    if y.all() or not y.any():
        raise InputError("subject_auc needs both classes among the labels")
    if not np.all(np.isfinite(index)):
        raise InputError("the subject index contains NaN or infinite values")
    return float(roc_auc_score(y, index))
