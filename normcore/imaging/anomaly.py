"""Anomaly maps, voxel z-maps against a healthy cohort, and the subject-level abnormality index."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

TOPS = {"top1": 0.01, "top5": 0.05, "peak": 0.0005}
"""The abnormality indices by name: the mean voxel z of the top 1%, 5% and 0.05% of the ranked voxels. ``peak``
(the top 0.05%, about 0.8 ml of a brain whichever the grid) is what a focal lesion of a few ml fills while
healthy noise, scattered over the brain, rarely does (BENCHMARKS.md: a peak index)."""

INDEX_LABELS = {"top1": "top 1%", "top5": "top 5%", "peak": "peak: top 0.05%"}
"""How each index is named to a user."""


def reslice_shift_text(reproducibility: float | None, smoothing_shift: float | None = None, whose: str = "its") -> str:
    """The model card's measured reslice shifts of the headline centile in words ("" when not measured), e.g.
    "reslicing a healthy scan by a quarter voxel moved its centile by 8 points on average, smoothing it slightly (a
    trilinear reslice) by 26: the index follows how smooth a scan is"."""
    if reproducibility is None:
        return ""
    text = f"reslicing a healthy scan by a quarter voxel moved {whose} centile by {reproducibility:.0f} points on " \
           "average"
    if smoothing_shift is not None:
        text += f", smoothing it slightly (a trilinear reslice) by {smoothing_shift:.0f}: the index follows how " \
                "smooth a scan is"
    return text


def anomaly_map(volume: np.ndarray, restoration: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """|scan - restoration| inside the brain, 0 outside."""
    return np.where(brain, np.abs(volume - restoration), 0.0).astype(np.float32)


def scored_errors(volume: np.ndarray, restoration: np.ndarray, brain: np.ndarray, error_scale: str = "none",
                  edge_erosion: int = 0, error_power: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The anomaly map the voxel statistics and z-maps use, and the brain voxels that are scored.

    ``error_scale="scan-median"`` divides |scan - restoration| by its median inside the brain (a scan-wide level
    of misfit, from intensity or registration, says nothing about a lesion); the result is raised to ``error_power``
    (2/3 makes the absolute error of a Gaussian residual nearly Gaussian: |e|^(2/3) = (e^2)^(1/3), Wilson-Hilferty,
    so z > 3 is about as rare on healthy voxels as a Gaussian tail; 1 keeps it); ``edge_erosion`` voxels of the
    brain's edge are left out (0 outside the scored voxels).
    """
    brain = np.asarray(brain, bool)
    error = anomaly_map(volume, restoration, brain)
    if error_scale == "scan-median" and brain.any():
        error = error / max(float(np.median(error[brain])), 1e-6)
    elif error_scale != "none":
        raise ValueError(f"unknown error_scale {error_scale!r}")
    if error_power != 1.0:
        error = error ** error_power
    scored = ndimage.binary_erosion(brain, iterations=edge_erosion) if edge_erosion else brain
    if edge_erosion and not scored.any():  # a brain thinner than the erosion keeps all its voxels
        scored = brain
    return np.where(scored, error, 0.0).astype(np.float32), scored


def healthy_error_stats(errors: np.ndarray, brains: np.ndarray, floor_fraction: float = 0.25
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and standard deviation of healthy anomaly maps (N, X, Y, Z).

    Voxels outside a subject's brain do not count for that subject. The standard deviation is floored
    at ``floor_fraction`` times its median over the brain, so voxels where few healthy subjects vary
    do not turn tiny errors into huge z.
    """
    w = brains.astype(np.float64)
    n = w.sum(0)
    mean = (errors * w).sum(0) / np.maximum(n, 1)
    var = (((errors - mean) ** 2) * w).sum(0) / np.maximum(n - 1, 1)
    std = np.sqrt(var)
    inside = n >= max(2, 0.5 * len(errors))
    floor = floor_fraction * float(np.median(std[inside])) if inside.any() else 1.0
    return mean.astype(np.float32), np.maximum(std, max(floor, 1e-6)).astype(np.float32)


def voxel_zmap(error: np.ndarray, mean: np.ndarray, std: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(error - healthy mean) / healthy std inside the brain, 0 outside."""
    return np.where(brain, (error - mean) / std, 0.0).astype(np.float32)


def index_region(scored: np.ndarray, margin: int = 0, within: np.ndarray | None = None) -> np.ndarray:
    """The voxels the abnormality index ranks: the scored voxels less ``margin`` more voxels of their edge, and,
    with ``within`` (the template's brain on the grid), only those inside it.

    The z-map itself keeps the edge (it is shown); the index leaves it out because within a few voxels of the brain's
    edge the restoration error follows the mask's exact boundary, not the anatomy (BENCHMARKS.md: an index that does
    not follow the mask's edge). Voxels of a registered mask outside the template's brain are where the mask or the
    registration disagrees with the template (a whole-head mask's leak, a vertex out of place), and there fewer healthy
    scans define the voxel statistics (BENCHMARKS.md: a peak index). A brain thinner than the margin keeps its scored
    voxels, and a region with nothing inside ``within`` keeps its own.
    """
    scored = np.asarray(scored, bool)
    region = scored
    if margin:
        inner = ndimage.binary_erosion(scored, iterations=margin)
        region = inner if inner.any() else scored
    if within is not None:
        inside = region & np.asarray(within, bool)
        region = inside if inside.any() else region
    return region


def abnormality_index(zmap: np.ndarray, brain: np.ndarray, top: float = 0.01) -> float:
    """Mean of the top ``top`` share of voxel z within the brain (extreme value statistics)."""
    values = zmap[brain]
    if values.size == 0:
        return float("nan")
    k = max(1, int(np.ceil(top * values.size)))
    return float(np.partition(values, values.size - k)[-k:].mean())


def leave_one_out_indices(errors: np.ndarray, brains: np.ndarray, top: float = 0.01, margin: int = 0,
                          within: np.ndarray | None = None) -> np.ndarray:
    """Each healthy subject's index with z-maps from the other subjects' statistics (no self-reference); the index
    ranks each subject's :func:`index_region` with ``margin`` and ``within``."""
    return leave_one_out_index_table(errors, brains, {"index": top}, margin, within)["index"]


def leave_one_out_index_table(errors: np.ndarray, brains: np.ndarray, tops: dict[str, float], margin: int = 0,
                              within: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`leave_one_out_indices` of every share in ``tops`` (name -> share), from one leave-one-out z-map per
    subject."""
    out = {k: np.empty(len(errors)) for k in tops}
    for i in range(len(errors)):  # N is a validation cohort (tens of subjects); each step is vectorised
        keep = np.arange(len(errors)) != i
        mean, std = healthy_error_stats(errors[keep], brains[keep])
        z, region = voxel_zmap(errors[i], mean, std, brains[i]), index_region(brains[i], margin, within)
        for k, top in tops.items():
            out[k][i] = abnormality_index(z, region, top)
    return out


def centile_among(value: float, reference: np.ndarray) -> float:
    """Centile (0-100) of ``value`` among healthy reference values (mid-rank for ties)."""
    ref = np.asarray(reference, float)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0 or not np.isfinite(value):
        return float("nan")
    return float(100.0 * ((ref < value).sum() + 0.5 * (ref == value).sum()) / ref.size)
