"""Do implausible scans get a warning beside their index, and does a healthy scan's index stay put when only its
mask changes? Held-out healthy IXI scans scored as they are, resampled to coarse voxels, with a brain mask covering
only part of the brain, without a mask, and with their mask one voxel wider or narrower.

    .venv/bin/python benchmarks/mri_plausibility.py [--model models/mri-ixi-cpu] [--n 5] [--threads 2]
        [--cases "as is,whole head, no mask"]

For the first ``--n`` held-out scans of the model's card: every index's healthy centile and the
warnings and whether the index is labelled reliable (quality gates), for (a) the scan and its brain mask, (b) the
scan resampled to 10 mm voxels (mask likewise), (c) the scan with its mask cut to the upper 40% of the brain,
(d) the whole-head scan without a mask, (e)/(f) the scan with its mask dilated / eroded by one voxel (a mask from
another tool differs from the training masks by about that much), (g) the scan and mask with the head moved (the
same voxels placed 3 degrees and 2 mm elsewhere in the scanner: the index's noise floor from registration), (h) the
scan and mask resampled onto the same grid moved by a quarter voxel (cubic spline: a second acquisition at the same
resolution, sampling the brain at another phase), (i) the same with trilinear interpolation (which also smooths the
scan slightly, as many reslicing tools do), (j) with slices 1.5 times thicker (a Gaussian slice profile, sampled
every slice), (k)/(l) filtered by a Gaussian of FWHM 2 / 3 mm (as some pipelines smooth), (m) upsampled to 1 mm
voxels with a cubic spline (the same information on the finer grid most T1 scans come on), (n) the head tilted 15
degrees (a clinical scan off the AC-PC line), (o) stored with its voxel axes permuted and flipped (same world
positions), (p) in other intensity units (a gain and an offset) and (q) under a 20% linear bias field. With
--update-card the headline index's mean shift under (h), and under (i) when it ran too, is stored in the model card
(``reproducibility``), which the CLI, the MRI page and reports show beside the centile.
Prints a JSON line per scan and condition; per condition how many scans failed each quality gate and how many had
their index labelled unreliable; and for every condition beside (a) the mean absolute gap between its centiles and
(a)'s and how many scans are within 15 points, for the model's headline index and the top 1%.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.processing import resample_to_output
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.imaging.cohort import find_file  # noqa: E402
from normcore.imaging.io import load_mask, load_volume  # noqa: E402
from normcore.imaging.pipeline import nifti_bytes, score_scan  # noqa: E402
from normcore.imaging.preprocess import voxel_sizes  # noqa: E402
from normcore.imaging.resampling import RESLICE_ORDER, reslice  # noqa: E402
from normcore.registry import load_model  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from mri import store_card_metrics  # noqa: E402  (benchmarks/mri.py)
from mri_registration import turned  # noqa: E402  (benchmarks/mri_registration.py)

CASES = ("as is", "10 mm voxels", "mask of the upper 40%", "whole head, no mask", "mask one voxel wider",
         "mask one voxel narrower", "head moved", "resliced by a quarter voxel", "trilinear reslice by a quarter voxel",
         "slices 1.5x thicker", "smoothed, FWHM 2 mm", "smoothed, FWHM 3 mm", "1 mm voxels", "head tilted 15 degrees",
         "stored in another orientation", "intensities rescaled", "bias field 20%")
# "head moved": the same voxels with the world position of scan and mask turned 3 degrees about z and shifted 2 mm
# along each axis, as a second session in the scanner would place the head; the registration has to undo it, so
# the gap to "as is" is the index's noise from registration alone.
MOVE_DEG, MOVE_MM = 3.0, 2.0
# "head tilted 15 degrees": the head pitched (nodding, about the left-right axis) and turned (about the vertical axis)
# as a clinical scan not aligned to the AC-PC line often is, and 10 mm off centre: the registration's reach.
TILT_PITCH_DEG, TILT_YAW_DEG, TILT_MM = 15.0, 5.0, 10.0
# "intensities rescaled": another scanner's or tool's intensity units (a gain and an offset), which the robust
# normalisation and the mutual-information registration should not see.
RESCALE_GAIN, RESCALE_OFFSET = 37.0, 250.0
# "bias field 20%": a smooth multiplicative intensity inhomogeneity (a receive coil's, uncorrected by N4) rising
# linearly by 20% across the head from its lower back left to its upper front right.
BIAS_SPAN = 0.2
# the card's reproducibility: the sub-voxel reslice (cubic) and, when run too, its trilinear twin (which also smooths)
RESLICE_CASES = ("resliced by a quarter voxel", "trilinear reslice by a quarter voxel")


def moved(affine: np.ndarray) -> np.ndarray:
    """``affine`` followed by the rigid move of the "head moved" case (world mm)."""
    shift = np.eye(4)
    shift[:3, 3] = MOVE_MM
    return shift @ turned("z", MOVE_DEG) @ affine


def tilted(affine: np.ndarray) -> np.ndarray:
    """``affine`` followed by the rigid move of the "head tilted 15 degrees" case (world mm, RAS: pitch about x,
    then yaw about z, then a shift along every axis)."""
    shift = np.eye(4)
    shift[:3, 3] = TILT_MM
    return shift @ turned("z", TILT_YAW_DEG) @ turned("x", TILT_PITCH_DEG) @ affine


def reordered(img: nib.Nifti1Image, brain: np.ndarray) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Scan and mask stored with their voxel axes permuted and flipped (another scanner's or converter's storage
    order; the same voxels in the same world positions): the result should be the scan's own."""
    order = np.array([[1, -1], [2, 1], [0, -1]])  # new axis i = old axis order[i, 0], flipped where order[i, 1] < 0
    transform = nib.orientations.inv_ornt_aff(order, img.shape)
    data = nib.orientations.apply_orientation(np.asarray(img.dataobj), order)
    mask = nib.orientations.apply_orientation(brain, order)
    affine = img.affine @ transform
    return nib.Nifti1Image(data, affine), nib.Nifti1Image(mask.astype(np.uint8), affine)


def biased(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The scan times a field rising linearly (world mm) by ``BIAS_SPAN`` across its field of view along (1, 1, 1)."""
    ijk = np.indices(img.shape, dtype=np.float32).reshape(3, -1)
    world = (img.affine[:3, :3] @ ijk).sum(axis=0).reshape(img.shape)  # (x + y + z) up to a constant
    ramp = (world - world.min()) / max(float(np.ptp(world)), 1e-6)
    return nib.Nifti1Image(np.asarray(img.dataobj, np.float32) * (1.0 - BIAS_SPAN / 2 + BIAS_SPAN * ramp), img.affine)


def resliced(img: nib.Nifti1Image, brain: np.ndarray, shift: float = 0.25, order: int = RESLICE_ORDER
             ) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Scan and mask resampled (a spline of ``order`` for the scan, cubic by default: how a second acquisition at the
    same resolution would sample the brain; order 1, trilinear, also smooths it; mask kept where it interpolates to
    >= 0.5) onto the same voxel grid moved by ``shift`` of a voxel along every axis
    (:func:`normcore.imaging.resampling.reslice`, as ``--resamplings`` does it)."""
    scan, mask = reslice(img, brain, shift, order)
    return scan, nib.Nifti1Image(mask.astype(np.uint8), scan.affine)


def zoomed(img: nib.Nifti1Image, brain: np.ndarray, data: np.ndarray, factors, order: int
           ) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """``data`` (the scan's voxels, possibly filtered) and ``brain`` zoomed by ``factors`` per voxel axis over the same
    field of view (a spline of ``order`` for the scan; the mask kept where it interpolates to >= 0.5), with the
    affine of the new voxels."""
    data = ndimage.zoom(data, factors, order=order, grid_mode=True, mode="nearest")
    mask = ndimage.zoom(brain.astype(np.float32), factors, order=1, grid_mode=True, mode="grid-constant") >= 0.5
    scale = np.asarray(brain.shape, float) / np.asarray(data.shape, float)
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] @ np.diag(scale)
    affine[:3, 3] += img.affine[:3, :3] @ ((scale - 1.0) / 2.0)
    return nib.Nifti1Image(data, affine), nib.Nifti1Image(mask.astype(np.uint8), affine)


def thicker(img: nib.Nifti1Image, brain: np.ndarray, factor: float = 1.5) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Scan and mask with slices ``factor`` times thicker along the last voxel axis: a Gaussian slice profile of that
    thickness (FWHM) over the scan's own, then sampled every slice thickness (mask kept where >= 0.5)."""
    sigma = [0.0, 0.0, np.sqrt(factor**2 - 1.0) / 2.355]  # voxels: a profile of FWHM factor over one of FWHM 1
    data = ndimage.gaussian_filter(np.asarray(img.dataobj, np.float32), sigma)
    return zoomed(img, brain, data, [1.0, 1.0, 1.0 / factor], order=1)


def finer(img: nib.Nifti1Image, brain: np.ndarray, voxel_mm: float = 1.0) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Scan and mask on a grid of ``voxel_mm`` voxels covering the same field of view (a cubic spline for the scan,
    the mask kept where it interpolates to >= 0.5): the same brain as a scanner with finer voxels would hand it over,
    without the detail such a scan would add. The index should not depend on the voxel size alone."""
    return zoomed(img, brain, np.asarray(img.dataobj, np.float32), voxel_sizes(img.affine) / voxel_mm, order=3)


def smoothed(img: nib.Nifti1Image, fwhm_mm: float) -> nib.Nifti1Image:
    """The scan filtered by an isotropic Gaussian of ``fwhm_mm`` (the voxels and mask stay as they are)."""
    sigma = fwhm_mm / 2.355 / voxel_sizes(img.affine)
    return nib.Nifti1Image(ndimage.gaussian_filter(np.asarray(img.dataobj, np.float32), sigma), img.affine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "mri-ixi-cpu"))
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--update-card", action="store_true",
                    help="store the headline index's mean |centile shift| under a quarter-voxel reslice in the model "
                         "card (key reproducibility), which the CLI, the MRI page and reports show beside the centile")
    listed = ", ".join(CASES).replace("%", "%%")  # argparse formats help with %
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of: {listed}"
                    " (split on ',' followed by a case name)")
    args = ap.parse_args()
    wanted = [c for c in CASES if c in args.cases]
    torch.set_num_threads(args.threads)
    model = load_model(args.model, kind="imaging")
    card = json.loads((Path(args.model) / "model.json").read_text())
    data = card["data"]
    images, masks = ROOT / data["images"], ROOT / data["masks"]
    if not images.is_dir():
        sys.exit(f"{images} is absent (it lives in ../shared/data)")
    import pandas as pd

    people = pd.read_csv(ROOT / data["participants"]).set_index("subject_id")
    centiles: dict[str, list[dict[str, float]]] = {c: [] for c in wanted}
    failed: dict[str, Counter] = {c: Counter() for c in wanted}  # case -> quality gate -> scans failing it
    unreliable = dict.fromkeys(wanted, 0)  # case -> scans whose index is labelled unreliable
    for sid in data["test_ids"][: args.n]:
        age, sex = float(people.loc[sid, "age"]), people.loc[sid, "sex"]
        img = load_volume(find_file(images, sid))
        brain = load_mask(find_file(masks, sid), img).astype(np.uint8)
        coarse = resample_to_output(img, voxel_sizes=(10.0, 10.0, 10.0), order=1)
        coarse_brain = resample_to_output(nib.Nifti1Image(brain, img.affine), voxel_sizes=(10.0, 10.0, 10.0), order=0)
        top = brain.copy()
        k = np.flatnonzero(brain.any(axis=(0, 1)))
        top[:, :, : k[0] + int(0.6 * (k[-1] - k[0]))] = 0
        cases = {"as is": (img, nib.Nifti1Image(brain, img.affine)), "10 mm voxels": (coarse, coarse_brain),
                 "mask of the upper 40%": (img, nib.Nifti1Image(top, img.affine)), "whole head, no mask": (img, None),
                 "mask one voxel wider": (img, nib.Nifti1Image(ndimage.binary_dilation(brain).astype(np.uint8),
                                                               img.affine)),
                 "mask one voxel narrower": (img, nib.Nifti1Image(ndimage.binary_erosion(brain).astype(np.uint8),
                                                                  img.affine)),
                 "head moved": (nib.Nifti1Image(np.asarray(img.dataobj), moved(img.affine)),
                                nib.Nifti1Image(brain, moved(img.affine))),
                 "resliced by a quarter voxel": resliced(img, brain),
                 "trilinear reslice by a quarter voxel": resliced(img, brain, order=1),
                 "slices 1.5x thicker": thicker(img, brain),
                 "smoothed, FWHM 2 mm": (smoothed(img, 2.0), nib.Nifti1Image(brain, img.affine)),
                 "smoothed, FWHM 3 mm": (smoothed(img, 3.0), nib.Nifti1Image(brain, img.affine)),
                 "head tilted 15 degrees": (nib.Nifti1Image(np.asarray(img.dataobj), tilted(img.affine)),
                                            nib.Nifti1Image(brain, tilted(img.affine))),
                 "stored in another orientation": reordered(img, brain),
                 "intensities rescaled": (nib.Nifti1Image(np.asarray(img.dataobj, np.float32) * RESCALE_GAIN
                                                          + RESCALE_OFFSET, img.affine),
                                          nib.Nifti1Image(brain, img.affine)),
                 "bias field 20%": (biased(img), nib.Nifti1Image(brain, img.affine))}
        if "1 mm voxels" in wanted:  # eight times the voxels: made only when asked for
            cases["1 mm voxels"] = finer(img, brain)
        for label, (scan, mask) in cases.items():
            if label not in wanted:
                continue
            r = score_scan(model, nifti_bytes(scan), age, sex, mask=None if mask is None else nifti_bytes(mask),
                           name=f"{sid} {label}")
            print(json.dumps({"scan": sid, "case": label,
                              **{f"centile_{k}": round(v, 1) for k, v in r.score.centile.items()},
                              "index_reliable": r.index_reliable,
                              "failed_gates": [g["gate"] for g in r.quality if not g["passed"]],
                              "facts": r.prepared.facts, "warnings": r.warnings}), flush=True)
            centiles[label].append(r.score.centile)
            failed[label].update(g["gate"] for g in r.quality if not g["passed"])
            unreliable[label] += not r.index_reliable
    for label in wanted:
        print(json.dumps({"gates": {"case": label, "n": len(centiles[label]), "index_unreliable": unreliable[label],
                                    "failed": dict(failed[label])}}))
    compared = [c for c in wanted if c != "as is"] if "as is" in wanted else []
    headline = model.config.headline_index
    shifts: dict[str, tuple[float, int, int]] = {}  # reslice case -> headline's mean |shift|, within 15, n
    for label in compared:
        key = "unmasked_vs_masked" if label == "whole head, no mask" else f"{label} vs as is"
        for top in dict.fromkeys((headline, "top1")):  # the headline index first, then the top 1% (if another)
            gap = np.abs(np.subtract([c[top] for c in centiles["as is"]], [c[top] for c in centiles[label]]))
            print(json.dumps({key: {"index": top, "headline": top == headline,
                                    "mean_abs_gap": round(float(gap.mean()), 1), "within_15": int((gap <= 15).sum()),
                                    "n": len(gap), "n_reference": len(model.reference_["kl-inpaint"][top]),
                                    "index_margin": model.config.index_margin}}))
            if label in RESLICE_CASES and top == headline:
                shifts[label] = (round(float(gap.mean()), 1), int((gap <= 15).sum()), len(gap))
    if args.update_card and "resliced by a quarter voxel" in shifts:
        (mean, within, n), smoothing = shifts["resliced by a quarter voxel"], shifts.get(RESLICE_CASES[1])
        store_card_metrics(Path(args.model), key="reproducibility", metrics={
            "case": "resliced by a quarter voxel (cubic spline)", "method": "kl-inpaint", "index": headline, "n": n,
            "mean_abs_centile_shift": mean, "within_15": within,
            **({"smoothing_mean_abs_centile_shift": smoothing[0], "smoothing_within_15": smoothing[1]}
               if smoothing else {}),
            "benchmark": f"benchmarks/mri_plausibility.py --n {args.n} (held-out healthy scans)"})


if __name__ == "__main__":
    main()
