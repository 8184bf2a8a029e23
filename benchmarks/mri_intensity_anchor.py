"""How far candidate intensity-normalisation anchors move when a scan's brain mask is one voxel wider or narrower.

    .venv/bin/python benchmarks/mri_intensity_anchor.py [--n 136] [--inset 0,3,5,8]

For each IXI scan in ``../shared/data/mri/ixi`` (label-map brain masks), the normalisation anchors of
``normcore.imaging.preprocess.normalise_intensity`` (0.5th and 99.5th percentiles over the mask) and the same
percentiles over the mask eroded by ``inset`` native voxels are computed for the label mask and for the label mask
dilated or eroded by one voxel. Prints the median shift of each anchor in units of the label mask's intensity range
(p99.5 - p0.5), beside the between-scan SD of that anchor: an anchor whose shift under a one-voxel mask change is
small against the SD lets a scan score the same whichever tool made its mask (BENCHMARKS.md: the index margin
applied to the shipped model). No model is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.imaging.cohort import NiftiFolder  # noqa: E402
from normcore.imaging.io import load_mask, load_volume  # noqa: E402

IXI = ROOT.parent / "shared" / "data" / "mri" / "ixi"


def anchors(data: np.ndarray, mask: np.ndarray, insets: list[int]) -> dict[str, float]:
    """The 0.5th / 99.5th percentiles over ``mask`` eroded by each inset (0: the mask itself)."""
    out = {}
    for inset in insets:
        region = ndimage.binary_erosion(mask, iterations=inset) if inset else mask
        lo, hi = np.percentile(data[region], [0.5, 99.5])
        out[f"p0.5, inset {inset}"], out[f"p99.5, inset {inset}"] = float(lo), float(hi)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=136, help="first N participants")
    ap.add_argument("--inset", default="0,3,5,8", help="comma-separated erosions of the mask (native voxels)")
    args = ap.parse_args()
    if not IXI.is_dir():
        sys.exit(f"{IXI} is absent (it lives in ../shared/data)")
    insets = [int(v) for v in args.inset.split(",")]
    scans, masks = NiftiFolder(IXI / "t1"), NiftiFolder(IXI / "brainmask_labels")
    rows = []
    for sid in pd.read_csv(IXI / "participants.csv").subject_id.tolist()[: args.n]:
        img = load_volume(scans.find(sid))
        data = np.asarray(img.get_fdata(dtype=np.float32))
        label = load_mask(masks.find(sid), img)
        base = anchors(data, label, insets)
        scale = base["p99.5, inset 0"] - base["p0.5, inset 0"]
        rows.append({"scan": sid, "case": "label mask", **{k: v / scale for k, v in base.items()}})
        for case, mask in (("one voxel wider", ndimage.binary_dilation(label)),
                           ("one voxel narrower", ndimage.binary_erosion(label))):
            moved = anchors(data, mask, insets)
            rows.append({"scan": sid, "case": case, **{k: (moved[k] - base[k]) / scale for k in base}})
    table = pd.DataFrame(rows)
    summary = table[table.case != "label mask"].groupby("case").median(numeric_only=True).T
    summary["between-scan SD"] = table[table.case == "label mask"].std(numeric_only=True)
    print(f"median shift of each anchor, in units of the label mask's p99.5 - p0.5 (n = {len(rows) // 3} scans)")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
