"""Write the dashboard's demo scans from the shipped imaging model's first held-out IXI scan.

    .venv/bin/python benchmarks/make_mri_demo.py [--model models/mri-ixi-cpu] [--out models/mri-demo-scans]

The scan is preprocessed exactly as for scoring (registered to MNI, normalised at its own resolution, on the
model grid, 4 mm) and saved on that grid, so the demo needs no registration and no second normalisation
(``normalised_inset_mm`` in demo.json); a second copy gets a real MS lesion mask (the one
closest to 15 ml on the grid) implanted. Needs ../shared/data (IXI scans and lesion masks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.imaging.cohort import find_file, read_participants  # noqa: E402
from normcore.imaging.io import load_mask, load_volume, save_nifti  # noqa: E402
from normcore.imaging.model import ImagingNormativeModel  # noqa: E402
from normcore.imaging.preprocess import prepare_scan  # noqa: E402
from normcore.imaging.synthetic import implant_lesion, lesion_volume_ml, real_lesion_masks  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "mri"

LICENCE = """Demo scans for the NormDiff dashboard (derived data, not code).

healthy.nii.gz / brain.nii.gz: one IXI T1 scan ({sid}, held out from the demo model's training), from the
IXI dataset (brain-development.org/ixi-dataset), as downsampled to 2 mm and segmented in the NiChart
project (test_data/processed/IXI, commit c40d6a1), then affinely registered to MNI152 and resampled to
the model's 4 mm grid by normcore. Licence: CC BY-SA 3.0 (the IXI licence); this derived file is shared
under the same licence.

lesion.nii.gz / lesion_mask.nii.gz: the same scan with a real multiple-sclerosis lesion mask ({lesion},
{ml:.1f} ml on this grid) implanted as a T1-hypointense lesion. Lesion mask from the Ljubljana 3D MR MS
database (Lesjak et al., Neuroinformatics 2017), CC BY.
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "mri-ixi-cpu"))
    ap.add_argument("--out", default=str(ROOT / "models" / "mri-demo-scans"))
    args = ap.parse_args()
    model = ImagingNormativeModel.load(args.model, device="cpu")
    sid = model.card_["data"]["test_ids"][0]
    table = read_participants(SHARED / "ixi" / "participants.csv").set_index("id")
    img = load_volume(find_file(SHARED / "ixi" / "t1", sid))
    prep = prepare_scan(img, model.grid, mask=load_mask(find_file(SHARED / "ixi" / "brainmask_labels", sid), img),
                        intensity_inset_mm=model.config.intensity_inset_mm)
    masks = real_lesion_masks(model.grid, SHARED / "lesion_masks_mni")
    name, lesion, _ = min(masks, key=lambda m: abs(lesion_volume_ml(m[1] & prep.brain, model.grid) - 15.0))
    lesion = lesion & prep.brain
    lesioned = implant_lesion(prep.volume, lesion, model.grid, seed=0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    aff = model.grid.affine
    for fname, arr, dtype in (("healthy.nii.gz", prep.volume, np.float32), ("lesion.nii.gz", lesioned, np.float32),
                              ("brain.nii.gz", prep.brain, np.uint8), ("lesion_mask.nii.gz", lesion, np.uint8)):
        save_nifti(nib.Nifti1Image(np.asarray(arr, dtype), aff), out / fname)
    age, sex = float(table.loc[sid, "age"]), str(table.loc[sid, "sex"])
    ml = lesion_volume_ml(lesion, model.grid)
    inset = float(model.config.intensity_inset_mm)  # the volumes are normalised already: scoring keeps them
    scans = [{"name": f"{sid} (IXI, held-out healthy, {age:.0f} y, {sex})", "file": "healthy.nii.gz", "age": age,
              "sex": sex, "brain": "brain.nii.gz", "normalised_inset_mm": inset},
             {"name": f"{sid} + real MS lesion ({name}, {ml:.1f} ml)", "file": "lesion.nii.gz", "age": age,
              "sex": sex, "brain": "brain.nii.gz", "lesion_mask": "lesion_mask.nii.gz", "normalised_inset_mm": inset}]
    (out / "demo.json").write_text(json.dumps({"space": "model grid (MNI152, 4 mm)", "scans": scans}, indent=1))
    (out / "LICENCE.txt").write_text(LICENCE.format(sid=sid, lesion=name, ml=ml))
    print(f"demo scans of {sid} with lesion {name} ({ml:.1f} ml) -> {out}")


if __name__ == "__main__":
    main()
