"""How close is the brain mask of a whole-head scan scored without a mask to the scan's label-map brain mask?

    .venv/bin/python benchmarks/mri_head_mask.py [--model models/mri-ixi-cpu] [--split test_ids] [--n 20]

For the first ``--n`` scans of a split of the model's card (IXI whole-head T1 scans in ``../shared/data``), runs
``prepare_scan`` without a mask, as ``mri-score`` does for a whole-head scan, and compares in the scan's own voxels
(a) the brain it used (``head_brain``: the registered template brain refined by intensity) and (b) the registered
template brain alone (the mask before the refinement) with the label-map mask (DLMUSE, label > 0): Dice, and the
millilitres of mask outside the label brain and of label brain outside the mask. Prints a JSON line per scan and
one with means, minima and the median seconds of ``prepare_scan``. Select settings on ``--split train_ids``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.imaging.cohort import find_file  # noqa: E402
from normcore.imaging.io import load_mask, load_volume  # noqa: E402
from normcore.imaging.preprocess import dice, prepare_scan, template_brain_native, voxel_sizes  # noqa: E402
from normcore.registry import load_model  # noqa: E402


def compare(mask: np.ndarray, label: np.ndarray, voxel_ml: float) -> dict[str, float]:
    return {"dice": round(dice(mask, label), 4), "over_ml": round(float((mask & ~label).sum()) * voxel_ml, 1),
            "under_ml": round(float((label & ~mask).sum()) * voxel_ml, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "mri-ixi-cpu"))
    ap.add_argument("--split", default="test_ids", choices=("test_ids", "train_ids", "validation_ids"))
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    model = load_model(args.model, kind="imaging")
    data = json.loads((Path(args.model) / "model.json").read_text())["data"]
    images, masks = ROOT / data["images"], ROOT / data["masks"]
    if not images.is_dir():
        sys.exit(f"{images} is absent (it lives in ../shared/data)")
    rows = []
    for sid in data[args.split][: args.n]:
        img = load_volume(find_file(images, sid))
        label = load_mask(find_file(masks, sid), img).astype(bool)
        voxel_ml = float(np.prod(voxel_sizes(img.affine))) / 1000.0
        start = time.perf_counter()
        prep = prepare_scan(img, model.grid, intensity_inset_mm=model.config.intensity_inset_mm)
        seconds = time.perf_counter() - start
        template = template_brain_native(img.shape[:3], np.asarray(img.affine, float), prep.matrix)
        row = {"scan": sid, "seconds": round(seconds, 2), "head_brain": compare(prep.native_brain, label, voxel_ml),
               "template_brain": compare(template, label, voxel_ml)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    seconds = float(np.median([r["seconds"] for r in rows]))
    summary = {"split": args.split, "n": len(rows), "median_seconds": round(seconds, 2)}
    for mask in ("head_brain", "template_brain"):
        summary[mask] = {f"{stat}_{k}": round(float(fn([r[mask][k] for r in rows])), 4 if k == "dice" else 1)
                         for k in ("dice", "over_ml", "under_ml") for stat, fn in (("mean", np.mean), ("min", np.min))}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
