"""How far does the affine registration to MNI reach? Held-out healthy IXI scans registered as they are and with the
head turned in the scanner (the same voxels, the world position rotated about the brain's centre), compared with
the registration of the scan as it is composed with the known turn.

    .venv/bin/python benchmarks/mri_registration.py [--model models/mri-ixi-cpu] [--n 20] [--threads 2]
        [--cases x:10,x:15,x:20,x:25,x:-20,y:15,z:20] [--head]

A case ``AXIS:DEG`` turns the head DEG degrees about the world (RAS) axis: x pitches it (nodding), y rolls it, z
turns it (as a clinical scan not aligned with the AC-PC line may come). ``--head`` registers the whole-head scan
without its brain mask (the template-brain path) instead of the scan with its mask. For every scan a JSON line with
the registration time of the scan as is and, per case, the RMS distance (mm) over template-brain points between the
two mappings and the brain's Dice with the template brain; then per case the median and largest error and how many
scans are more than 2 and 5 mm off.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.imaging.cohort import find_file  # noqa: E402
from normcore.imaging.grid import template_on_grid  # noqa: E402
from normcore.imaging.io import load_mask, load_volume  # noqa: E402
from normcore.imaging.preprocess import prepare_scan  # noqa: E402
from normcore.registry import load_model  # noqa: E402

AXES = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}  # the plane each world axis turns


def turned(axis: str, degrees: float, centre: np.ndarray | None = None) -> np.ndarray:
    """4x4 world (RAS mm) rotation of ``degrees`` about ``axis`` through ``centre`` (the world origin by default)."""
    centre = np.zeros(3) if centre is None else centre
    a = np.deg2rad(degrees)
    i, j = AXES[axis]
    rotation = np.eye(4)
    rotation[[i, i, j, j], [i, j, i, j]] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre, centre
    return back @ rotation @ to_centre


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "mri-ixi-cpu"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="x:10,x:15,x:20,x:25,x:-20,y:15,z:20")
    ap.add_argument("--head", action="store_true", help="register whole-head scans without their brain masks")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(c.split(":")[0], float(c.split(":")[1])) for c in args.cases.split(",")]
    model = load_model(args.model, kind="imaging")
    data = json.loads((Path(args.model) / "model.json").read_text())["data"]
    images, masks = ROOT / data["images"], ROOT / data["masks"]
    if not images.is_dir():
        sys.exit(f"{images} is absent (it lives in ../shared/data)")
    grid, inset = model.grid, model.config.intensity_inset_mm
    points = np.argwhere(template_on_grid(grid)[1])[::7]
    points = np.c_[points, np.ones(len(points))] @ grid.affine.T  # template-brain points, MNI mm

    def prepare(img: nib.Nifti1Image, brain: np.ndarray):
        return prepare_scan(img, grid, None if args.head else brain, intensity_inset_mm=inset)

    errors: dict[str, list[float]] = {f"{a}{d:g}": [] for a, d in cases}
    for sid in data["test_ids"][: args.n]:
        img = load_volume(find_file(images, sid))
        brain = load_mask(find_file(masks, sid), img).astype(np.uint8)
        start = time.perf_counter()
        as_is = prepare(img, brain)
        row = {"scan": sid, "as_is_s": round(time.perf_counter() - start, 2),
               "as_is_dice": None if as_is.template_dice is None else round(as_is.template_dice, 4)}
        centre = (img.affine @ np.r_[np.argwhere(brain).mean(axis=0), 1.0])[:3]
        for axis, degrees in cases:
            turn = turned(axis, degrees, centre)
            out = prepare(nib.Nifti1Image(np.asarray(img.dataobj), turn @ img.affine), brain)
            gap = np.linalg.norm((points @ (turn @ as_is.matrix - out.matrix).T)[:, :3], axis=1)
            rms = float(np.sqrt((gap**2).mean()))
            errors[f"{axis}{degrees:g}"].append(rms)
            row[f"{axis}{degrees:g}"] = {"rms_mm": round(rms, 2), "dice": None if out.template_dice is None
                                         else round(out.template_dice, 4)}
        print(json.dumps(row), flush=True)
    for case, e in errors.items():
        e = np.asarray(e)
        print(json.dumps({"case": case, "n": len(e), "median_mm": round(float(np.median(e)), 2),
                          "max_mm": round(float(e.max()), 2), "over_2mm": int((e > 2).sum()),
                          "over_5mm": int((e > 5).sum())}))


if __name__ == "__main__":
    main()
