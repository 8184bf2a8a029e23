"""How far a scan's centile moves when the same scan is sampled again: a per-scan band.

The model card states how far healthy scans' centiles moved, on average, when they were resliced by a quarter voxel
(BENCHMARKS.md: how reproducible is a healthy scan's centile?); this measures it for one scan. The scan (and its
mask, when it came with one or is skull-stripped) is resliced onto its own voxel grid moved by a random fraction of
a voxel along each axis, with a cubic spline (how a second acquisition at the same resolution would sample the same
brain; a trilinear reslice would also smooth it, and the index follows smoothing, so the band would show the
smoothing's shift instead), prepared again from the start (a whole-head scan gets its mask again, every version is
registered again) and restored and scored like the scan itself. The band is the range of the headline index's
centile over the scan as given and its resliced versions: a narrow band near the top is a finding; a wide one says
the centile is sampling noise. It is how far sampling alone can move the centile, not a confidence interval. It
needs the scan's voxels finer than the model grid and intensities normalised here, so a volume given already on the
model grid (the demo scans) has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore.imaging.model import ImagingNormativeModel, ImagingScore
from normcore.imaging.preprocess import PreparedScan, prepare_scan, voxel_sizes

MAX_RESAMPLINGS = 16
# Cubic, not trilinear: a trilinear reslice also smooths the scan, and the index follows smoothing far more than
# sub-voxel sampling (BENCHMARKS.md, fourteenth session), so a trilinear band would show the smoothing's shift.
RESLICE_ORDER = 3


@dataclass
class ResamplingBand:
    """The headline index's centile for the scan as given (first) and for each resliced version."""

    index: str
    centiles: list[float]
    shifts_vox: list[list[float]]  # each version's reslice offset (voxels of the scan, per axis)

    @property
    def low(self) -> float:
        return float(np.nanmin(self.centiles))

    @property
    def high(self) -> float:
        return float(np.nanmax(self.centiles))

    @property
    def n_resamplings(self) -> int:
        return len(self.centiles) - 1

    def text(self) -> str:
        """e.g. "resliced 4 times by a fraction of a voxel, the centile ranged 41-83"."""
        return f"resliced {self.n_resamplings} times by a fraction of a voxel, the centile ranged " \
               f"{self.low:.0f}-{self.high:.0f}"

    def to_dict(self) -> dict:
        return {"index": self.index, "low": self.low, "high": self.high, "centiles": list(self.centiles),
                "n_resamplings": self.n_resamplings, "shifts_vox": self.shifts_vox}


def check_resamplings(n) -> int:
    """``n`` as a number of resliced versions, 0 to :data:`MAX_RESAMPLINGS`."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 0 <= n <= MAX_RESAMPLINGS:
        raise InputError(f"resamplings {n!r}: a whole number from 0 to {MAX_RESAMPLINGS}")
    return int(n)


def reslice(img: nib.Nifti1Image, brain: np.ndarray | None, shift_vox, order: int = RESLICE_ORDER
            ) -> tuple[nib.Nifti1Image, np.ndarray | None]:
    """Scan resampled onto its own voxel grid moved by ``shift_vox`` voxels along each axis (a scalar or three) with
    a spline of ``order`` (3, the default: cubic, kept within the scan's own intensity range; 1: trilinear, which
    also smooths), and its mask (kept where it interpolates linearly to >= 0.5); the affine says where the new
    voxels are."""
    shift = np.broadcast_to(np.asarray(shift_vox, float), (3,))
    source = np.asarray(img.dataobj, np.float32)
    data = ndimage.shift(source, shift, order=int(order), mode="nearest")
    if order > 1:  # a spline overshoots at sharp edges; a resampled scan has no intensities its voxels lacked
        data = np.clip(data, source.min(), source.max())
    mask = None if brain is None else \
        ndimage.shift(np.asarray(brain, np.float32), shift, order=1, mode="constant") >= 0.5
    affine = np.asarray(img.affine, float).copy()
    affine[:3, 3] -= img.affine[:3, :3] @ shift
    return nib.Nifti1Image(data, affine), mask


def unavailable_reason(prepared: PreparedScan, prenormalised: bool) -> str | None:
    """Why the scan cannot be resliced for a band, or None when it can."""
    if prenormalised:
        return "the scan was given already normalised on the model grid"
    coarsest = float(voxel_sizes(prepared.native.affine).max())
    if coarsest >= float(prepared.grid.spacing_mm):
        return f"its voxels ({coarsest:g} mm) are not finer than the model grid ({prepared.grid.spacing_mm:g} mm)"
    return None


def resampling_band(model: ImagingNormativeModel, prepared: PreparedScan, score: ImagingScore, age: float, sex,
                    n: int, method: str = "kl-inpaint", register: bool = True, seed: int = 0,
                    progress: Progress | None = None) -> ResamplingBand:
    """The band of ``score`` (the scan as prepared) over ``n`` resliced versions (see the module docstring). The
    offsets are uniform in +-half a voxel per axis, drawn from ``seed``; the versions are restored together."""
    n = check_resamplings(n)
    progress = as_progress(progress)
    # a given or skull-stripped brain is resliced with the scan; a whole head gets its mask again, as it did
    brain = prepared.native_brain if prepared.facts.get("mask_source") != "template" else None
    shifts = np.random.default_rng(seed).uniform(-0.5, 0.5, (n, 3))
    volumes, brains = [], []
    for k, shift in enumerate(shifts):  # each version is preprocessed as a new scan (registration included)
        progress.update("resliced versions", k, n)
        img, mask = reslice(prepared.native, brain, shift)
        again = prepare_scan(img, prepared.grid, mask=mask, register=register,
                             intensity_inset_mm=prepared.intensity_inset_mm)
        volumes.append(again.volume)
        brains.append(again.brain)
    progress.update("resliced versions", n, n)
    centiles = [float(score.centile[score.headline])]
    if n:
        scores = model.score_batch(np.stack(volumes), np.stack(brains), [age] * n, [sex] * n, method,
                                   progress=progress)
        centiles += [float(s.centile[s.headline]) for s in scores]
    return ResamplingBand(score.headline, centiles, np.round(shifts, 3).tolist())
