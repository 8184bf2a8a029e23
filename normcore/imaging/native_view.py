"""A scored scan at its own resolution, for display: the scan and its z-map on the scan's voxels, reoriented to
RAS (nibabel's closest canonical orientation: no resampling, only axis flips and swaps), and the most anomalous
region to open on.

The z-map is the model-grid z-map mapped to the scan's voxels with trilinear interpolation (smooth, for display;
the scores themselves are computed on the model grid). Planes follow :mod:`normcore.plotting.imaging`'s
convention (neurological, row 0 at the top).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from normcore._utils.errors import InputError
from normcore.imaging.slices import AXES, axis_index, slice_of

Z_THRESHOLD = 3.0  # the z above which voxels are shown and which the most anomalous region is the excess over
Z_DISPLAY_MAX = 8.0  # z colour scales are clipped here (larger z drawn in the top colour)
REGION_SIGMA_MM = 4.0  # smoothing of the z excess before its maximum is taken: a region, not one voxel
SEARCH_VOXEL_MM = 2.0  # the region search runs on a grid at least this coarse (native scans can be 0.5 mm)


@dataclass
class NativeView:
    """The scan (grey values in 0..1) and its z-map on the scan's own voxels in RAS orientation."""

    grey: np.ndarray
    z: np.ndarray
    brain: np.ndarray
    affine: np.ndarray  # voxel -> scanner mm of the RAS arrays
    background: str = "scan"  # "restoration" when the scan itself was not available

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.grey.shape)

    @property
    def zooms(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def aspect(self, axis: str | int) -> float:
        """Height / width of one pixel of a plane along ``axis`` (rows and columns as :func:`slice_of` gives)."""
        rows_cols = {0: (2, 1), 1: (2, 0), 2: (1, 0)}[axis_index(axis)]
        zooms = self.zooms
        return float(zooms[rows_cols[0]] / zooms[rows_cols[1]])

    def plane(self, axis: str | int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(grey, z) slices through voxel ``index`` along ``axis``."""
        return slice_of(self.grey, axis, index), slice_of(self.z, axis, index)

    def mm(self, voxel) -> tuple[float, float, float]:
        return tuple(float(v) for v in (self.affine @ np.append(np.asarray(voxel, float), 1.0))[:3])

    @functools.cached_property
    def most_anomalous(self) -> tuple[int, int, int]:
        """:func:`most_anomalous_voxel` of this view (computed once)."""
        return most_anomalous_voxel(self)

    def share_above(self, threshold: float = Z_THRESHOLD) -> float:
        return float((self.z[self.brain] > threshold).mean()) if self.brain.any() else float("nan")


def _normalise(volume: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Grey values in 0..1 from the 1st-99th percentiles of the brain (or of all nonzero voxels)."""
    ref = volume[inside] if inside.any() else volume[volume != 0]
    lo, hi = np.percentile(ref, [1, 99]) if ref.size else (0.0, 1.0)
    return np.clip((volume - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def native_view(scan: nib.Nifti1Image, zmap: nib.Nifti1Image, brain: np.ndarray | None = None,
                background: str = "scan") -> NativeView:
    """The view of a scan and its z-map on the same voxel grid; ``brain`` (bool, the scan's voxel array) defaults
    to the voxels where the z-map is nonzero (an exported z-map is zero outside the brain)."""
    if scan.shape[:3] != zmap.shape[:3] or not np.allclose(scan.affine, zmap.affine, atol=1e-3):
        raise InputError(f"the scan {scan.shape[:3]} and the z-map {zmap.shape[:3]} are not on the same voxel grid "
                         "(give the scan that was scored)")
    z_img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(zmap.dataobj, np.float32).reshape(zmap.shape[:3]),
                                                     zmap.affine))
    s_img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(scan.dataobj, np.float32).reshape(scan.shape[:3]),
                                                     scan.affine))
    z = np.nan_to_num(np.asarray(z_img.dataobj, np.float32))
    if brain is not None:
        inside = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(np.asarray(brain, np.uint8),
                                                                     scan.affine)).dataobj) > 0
    else:
        inside = z != 0
    return NativeView(_normalise(np.asarray(s_img.dataobj, np.float32), inside), z, inside, z_img.affine, background)


def view_of_result(result) -> NativeView:
    """The native view of a scored scan in memory (a :class:`~normcore.imaging.pipeline.ScanResult`)."""
    from normcore.imaging.preprocess import to_native

    return native_view(result.prepared.native, to_native(result.prepared, result.score.zmap),
                       brain=result.prepared.native_brain)


def most_anomalous_voxel(view: NativeView) -> tuple[int, int, int]:
    """Voxel of the largest smoothed z excess over the threshold inside the brain (largest smoothed z if none)."""
    zooms = view.zooms
    step = np.maximum(1, np.floor(SEARCH_VOXEL_MM / zooms)).astype(int)
    coarse = np.where(view.brain, view.z, 0.0)[::step[0], ::step[1], ::step[2]]
    brain = view.brain[::step[0], ::step[1], ::step[2]]
    if not brain.any():
        return tuple(int(n) // 2 for n in view.shape)
    sigma = REGION_SIGMA_MM / (zooms * step)
    excess = ndimage.gaussian_filter(np.clip(coarse - Z_THRESHOLD, 0, None), sigma)
    target = excess if (excess[brain] > 0).any() else ndimage.gaussian_filter(coarse, sigma)
    target = np.where(brain, target, -np.inf)
    return tuple(int(i * s) for i, s in zip(np.unravel_index(int(np.argmax(target)), target.shape), step,
                                            strict=True))


__all__ = ["AXES", "NativeView", "Z_DISPLAY_MAX", "Z_THRESHOLD", "most_anomalous_voxel", "native_view",
           "view_of_result"]
