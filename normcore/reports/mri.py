"""The MRI part of a subject report: the abnormality index with its healthy centile, quality warnings, and three
orthogonal slices of the scan at its own resolution through the most anomalous region with the z-map above it.

Built from a scored scan in memory (:class:`normcore.imaging.pipeline.ScanResult`) or from a folder written by
``normcore mri-score --out`` (``result.json`` and ``zmap.nii.gz`` in the scan's space) plus the scan itself.
Slices are in the viewer's convention (:mod:`normcore.plotting.imaging`: RAS, neurological, row 0 at the top).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from normcore._utils.errors import InputError
from normcore.plotting.imaging import AXES, slice_of

Z_THRESHOLD = 3.0  # voxels shown on the slices and used to find the most anomalous region
Z_DISPLAY_MAX = 8.0  # the z colour scale is clipped here (larger z are drawn in the top colour)
REGION_SIGMA_MM = 4.0  # smoothing of the z excess before its maximum is taken: a region, not one voxel
SEARCH_VOXEL_MM = 2.0  # the region search runs on a grid at least this coarse (native scans can be 0.5 mm)


@dataclass
class MriFindings:
    """Everything the MRI part of a report shows, as plain data."""

    scan: str
    method: str
    index: dict[str, float]  # abnormality index: mean z of the top 1% / 5% of brain voxels
    centile: dict[str, float]  # its centile (0-100) among the healthy reference scans
    n_reference: int | None  # how many healthy scans the centile ranks among
    centre_mm: tuple[float, float, float]  # scanner (RAS) coordinates of the most anomalous region
    planes: dict[str, tuple[np.ndarray, np.ndarray, float]]  # axis -> (scan slice in 0..1, z slice, row/col aspect)
    background: str = "scan"  # what the grey image is ("scan", or "restoration" when the scan was not available)
    warnings: list[str] = field(default_factory=list)
    share_above: float = np.nan  # share of brain voxels with z above Z_THRESHOLD

    def index_line(self) -> str:
        resolution = (f"{self.n_reference} healthy reference scans (steps of {100 / self.n_reference:.1f} centile "
                      "points)") if self.n_reference else "the healthy reference scans"
        return (f"Abnormality index (mean z of the top 1% of brain voxels) {self.index['top1']:.2f}: centile "
                f"{self.centile['top1']:.0f} among {resolution}; top 5%: {self.index['top5']:.2f}, centile "
                f"{self.centile['top5']:.0f}.")

    def share_line(self) -> str:
        if not np.isfinite(self.share_above):
            return ""
        return f"{100 * self.share_above:.2f}% of brain voxels have z above {Z_THRESHOLD:g}."


def _normalise(volume: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Grey values in 0..1 from the 1st-99th percentiles of the brain (or of all nonzero voxels)."""
    ref = volume[inside] if inside.any() else volume[volume != 0]
    lo, hi = np.percentile(ref, [1, 99]) if ref.size else (0.0, 1.0)
    return np.clip((volume - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def _most_anomalous(z: np.ndarray, inside: np.ndarray, zooms: np.ndarray) -> tuple[int, int, int]:
    """Voxel of the largest smoothed z excess over the threshold inside the brain (largest smoothed z if none)."""
    step = np.maximum(1, np.floor(SEARCH_VOXEL_MM / zooms)).astype(int)
    coarse = np.where(inside, np.nan_to_num(z), 0.0)[::step[0], ::step[1], ::step[2]]
    brain = inside[::step[0], ::step[1], ::step[2]]
    sigma = REGION_SIGMA_MM / (zooms * step)
    excess = ndimage.gaussian_filter(np.clip(coarse - Z_THRESHOLD, 0, None), sigma)
    target = excess if (excess[brain] > 0).any() else ndimage.gaussian_filter(coarse, sigma)
    target = np.where(brain, target, -np.inf)
    return tuple(int(i * s) for i, s in zip(np.unravel_index(int(np.argmax(target)), target.shape), step,
                                            strict=True))


def findings(scan: nib.Nifti1Image, zmap: nib.Nifti1Image, summary: dict, brain: np.ndarray | None = None,
             background: str = "scan") -> MriFindings:
    """The MRI findings from a scan, its z-map on the same voxel grid, and a ``ScanResult.summary()`` dict."""
    if scan.shape[:3] != zmap.shape[:3] or not np.allclose(scan.affine, zmap.affine, atol=1e-3):
        raise InputError(f"the scan {scan.shape[:3]} and the z-map {zmap.shape[:3]} are not on the same voxel grid "
                         "(give the scan that was scored)")
    z_img = nib.as_closest_canonical(zmap)
    s_img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(scan.dataobj, np.float32).reshape(scan.shape[:3]),
                                                     scan.affine))
    z = np.asarray(z_img.dataobj, np.float32)
    inside = (np.asarray(nib.as_closest_canonical(nib.Nifti1Image(brain.astype(np.uint8), scan.affine)).dataobj) > 0
              if brain is not None else z != 0)  # the exported z-map is zero outside the brain
    zooms = np.asarray(z_img.header.get_zooms()[:3], float)
    centre = _most_anomalous(z, inside, zooms)
    grey = _normalise(np.asarray(s_img.dataobj, np.float32), inside)
    aspects = {"sagittal": zooms[2] / zooms[1], "coronal": zooms[2] / zooms[0], "axial": zooms[1] / zooms[0]}
    planes = {axis: (slice_of(grey, AXES[axis], centre[AXES[axis]]), slice_of(z, AXES[axis], centre[AXES[axis]]),
                     float(aspects[axis])) for axis in ("axial", "coronal", "sagittal")}
    centre_mm = tuple(float(v) for v in (z_img.affine @ np.append(centre, 1.0))[:3])
    share = float((z[inside] > Z_THRESHOLD).mean()) if inside.any() else np.nan
    return MriFindings(str(summary.get("scan", "scan")), str(summary.get("method", "")),
                       dict(summary["abnormality_index"]), dict(summary["healthy_centile"]),
                       summary.get("healthy_reference_n"), centre_mm, planes, background,
                       list(summary.get("warnings", [])), share)


def findings_from_result(result) -> MriFindings:
    """Findings of a scored scan in memory (a :class:`~normcore.imaging.pipeline.ScanResult`)."""
    from normcore.imaging.preprocess import to_native

    zmap = to_native(result.prepared, result.score.zmap)
    return findings(result.prepared.native, zmap, result.summary(), brain=result.prepared.native_brain)


def findings_from_folder(folder: str | Path, scan: str | Path | None = None) -> MriFindings:
    """Findings from an ``mri-score --out`` folder; the grey image is ``scan``, else the scan named in its
    result.json when that file is still there, else the pseudo-healthy restoration (said in the report)."""
    from normcore.imaging.io import load_volume

    folder = Path(folder)
    try:
        summary = json.loads((folder / "result.json").read_text())
        zmap = nib.load(folder / "zmap.nii.gz")
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}: not an mri-score result folder (result.json and zmap.nii.gz): {exc}") from None
    candidate = Path(scan) if scan else Path(str(summary.get("scan", "")))
    if candidate.is_file():
        return findings(load_volume(candidate), zmap, summary)
    if scan:
        raise InputError(f"scan {scan}: file not found")
    return findings(nib.load(folder / "restoration.nii.gz"), zmap, summary, background="restoration")
