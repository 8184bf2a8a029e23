"""The MRI part of a subject report: the abnormality index with its healthy centile, quality warnings, and three
orthogonal slices of the scan at its own resolution through the most anomalous region with the z-map above it.

Built from a scored scan in memory (:class:`normcore.imaging.pipeline.ScanResult`) or from a folder written by
``normcore mri-score --out`` (``result.json`` and ``zmap.nii.gz`` in the scan's space) plus the scan itself.
Slices are in the viewer's convention (:mod:`normcore.imaging.slices`: RAS, neurological, row 0 at the top).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from normcore._utils.errors import InputError
from normcore.imaging.anomaly import INDEX_LABELS, reslice_shift_text
from normcore.imaging.brain_age import BrainAge
from normcore.imaging.native_view import (
    AXES,
    Z_DISPLAY_MAX,
    Z_THRESHOLD,
    NativeView,
    native_view,
    view_of_result,
)

__all__ = ["Z_DISPLAY_MAX", "Z_THRESHOLD", "MriFindings", "findings", "findings_from_folder", "findings_from_result",
           "findings_of_view"]


@dataclass
class MriFindings:
    """Everything the MRI part of a report shows, as plain data."""

    scan: str
    method: str
    index: dict[str, float]  # abnormality indices by name (normcore.imaging.anomaly.TOPS: mean z of the top voxels)
    centile: dict[str, float]  # its centile (0-100) among the healthy reference scans
    n_reference: int | None  # how many healthy scans the centile ranks among
    centre_mm: tuple[float, float, float]  # scanner (RAS) coordinates of the most anomalous region
    planes: dict[str, tuple[np.ndarray, np.ndarray, float]]  # axis -> (scan slice in 0..1, z slice, row/col aspect)
    background: str = "scan"  # what the grey image is ("scan", or "restoration" when the scan was not available)
    warnings: list[str] = field(default_factory=list)
    share_above: float = np.nan  # share of brain voxels with z above Z_THRESHOLD
    headline: str = "top1"  # the index the findings lead with (result.json ``headline_index``; top1 before it)
    reproducibility: float | None = None  # mean |centile shift| of healthy scans resliced by a quarter voxel
    band: dict | None = None  # this scan's centile over resliced versions (result.json ``healthy_centile_band``)
    smoothing_shift: float | None = None  # the same under a trilinear reslice, which also smooths the scan
    brain_age: dict | None = None  # result.json ``brain_age`` (normcore.imaging.brain_age.BrainAge), if any

    def index_line(self) -> str:
        resolution = (f"{self.n_reference} healthy reference scans (steps of {100 / self.n_reference:.1f} centile "
                      "points)") if self.n_reference else "the healthy reference scans"
        others = "; ".join(f"{INDEX_LABELS.get(k, k)}: {v:.2f}, centile {self.centile.get(k, np.nan):.0f}"
                           for k, v in self.index.items() if k != self.headline)
        shift = reslice_shift_text(self.reproducibility, self.smoothing_shift, whose="this")
        spread = f" {shift[:1].upper()}{shift[1:]}." if shift else ""
        if self.band:
            spread += (f" Resliced {self.band['n_resamplings']} times by a fraction of a voxel, this scan's centile "
                       f"ranged {self.band['low']:.0f}-{self.band['high']:.0f}.")
        return (f"Abnormality index (mean z of the brain's most abnormal voxels, {INDEX_LABELS.get(self.headline)}) "
                f"{self.index[self.headline]:.2f}: centile {self.centile[self.headline]:.0f} among {resolution}"
                + (f"; {others}." if others else ".") + spread)

    def share_line(self) -> str:
        """The share of brain voxels above the z threshold, then the brain age when the model reads one."""
        text = (f"{100 * self.share_above:.2f}% of brain voxels have z above {Z_THRESHOLD:g}."
                if np.isfinite(self.share_above) else "")
        if self.brain_age:
            line = BrainAge(**self.brain_age).text()
            text = f"{text} {line[:1].upper()}{line[1:]}.".strip()
        return text


def findings(scan: nib.Nifti1Image, zmap: nib.Nifti1Image, summary: dict, brain: np.ndarray | None = None,
             background: str = "scan") -> MriFindings:
    """The MRI findings from a scan, its z-map on the same voxel grid, and a ``ScanResult.summary()`` dict."""
    return findings_of_view(native_view(scan, zmap, brain, background), summary)


def findings_of_view(view: NativeView, summary: dict) -> MriFindings:
    """The findings of a scan's native view (:mod:`normcore.imaging.native_view`) and its summary."""
    centre = view.most_anomalous
    planes = {axis: (*view.plane(axis, centre[AXES[axis]]), view.aspect(axis)) for axis in ("axial", "coronal",
                                                                                             "sagittal")}
    return MriFindings(str(summary.get("scan", "scan")), str(summary.get("method", "")),
                       dict(summary["abnormality_index"]), dict(summary["healthy_centile"]),
                       summary.get("healthy_reference_n"), view.mm(centre), planes, view.background,
                       list(summary.get("warnings", [])), view.share_above(), summary.get("headline_index", "top1"),
                       summary.get("healthy_centile_reproducibility"), summary.get("healthy_centile_band"),
                       smoothing_shift=summary.get("healthy_centile_smoothing_shift"),
                       brain_age=summary.get("brain_age"))


def findings_from_result(result, view: NativeView | None = None) -> MriFindings:
    """Findings of a scored scan in memory (a :class:`~normcore.imaging.pipeline.ScanResult`), from its native
    view when already made (the MRI page keeps one per scan)."""
    return findings_of_view(view if view is not None else view_of_result(result), result.summary())


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
