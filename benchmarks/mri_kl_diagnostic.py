"""Does the per-element step KL single out lesions? Mean KL inside vs outside implanted lesions.

    .venv/bin/python benchmarks/mri_kl_diagnostic.py [--model models/mri-ixi-cpu]

Uses the model's held-out IXI scans with the same real lesions as benchmarks/mri.py. For each noise
level: the mean latent KL(q(z_{t-1} | z_t, z_0) || p(z_{t-1} | z_t)) over latent positions touched by
a lesion and over the rest, and the share of each selected by the KL mask. A useful healthy prior gives
a much larger KL inside lesions; equal values mean the mask is not driven by the anomaly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import mri as bench  # noqa: E402

from normcore.imaging.cohort import find_file, read_participants  # noqa: E402
from normcore.imaging.io import load_mask, load_volume  # noqa: E402
from normcore.imaging.model import ImagingNormativeModel  # noqa: E402
from normcore.imaging.preprocess import prepare_scan  # noqa: E402
from normcore.imaging.restoration import denoiser_step_kl, kl_mask  # noqa: E402
from normcore.imaging.synthetic import implant_lesion, real_lesion_masks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "mri-ixi-cpu"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = ImagingNormativeModel.load(args.model, device="cpu")
    ids = model.card_["data"]["test_ids"]
    table = read_participants(bench.IXI / "participants.csv").set_index("id")
    vols, healthy, truth = [], [], []
    masks = real_lesion_masks(model.grid, bench.LESIONS)
    for i, sid in enumerate(ids):
        img = load_volume(find_file(bench.IXI / "t1", sid))
        prep = prepare_scan(img, model.grid, mask=load_mask(find_file(bench.IXI / "brainmask_labels", sid), img),
                            intensity_inset_mm=model.config.intensity_inset_mm)
        lesion = masks[i % len(masks)][1] & prep.brain
        vols.append(implant_lesion(prep.volume, lesion, model.grid, seed=i))
        healthy.append(prep.volume)
        truth.append(lesion)
    z0, _ = model.encode(np.stack(vols))
    f = model.ae_.factor
    shp = model.latent_shape_[1:]
    touched = np.stack(truth).reshape(len(truth), shp[0], f, shp[1], f, shp[2], f).any(axis=(2, 4, 6))
    touched = torch.from_numpy(touched)
    # How far the lesion moves the latent, in units of the healthy between-subject SD of each element
    zh, _ = model.encode(np.stack(healthy))
    sd = zh.std(dim=0, keepdim=True).clamp_min(1e-6)
    shift = ((z0 - zh).abs() / sd).amax(dim=1)  # largest over channels, per latent position
    print(f"lesion shift of touched latent positions, in healthy between-subject SDs (max over channels): "
          f"median {float(shift[touched].median()):.2f}, mean {float(shift[touched].mean()):.2f}, "
          f"share > 2 SD {float((shift[touched] > 2).float().mean()):.3f}; untouched positions median "
          f"{float(shift[~touched].median()):.2f}")
    cond = model._cond([float(table.loc[s, "age"]) for s in ids], [table.loc[s, "sex"] for s in ids])
    gen = torch.Generator().manual_seed(0)
    print("level  KL in lesion  KL outside  mask share in lesion  mask share outside")
    with torch.no_grad():
        for li, level in enumerate(model.config.levels):
            t = torch.full((len(z0),), level)
            kl = denoiser_step_kl(model.schedule, model.denoiser_, z0, model.schedule.q_sample(z0, t, gen), t, cond,
                                  model.config.clip_x0)
            m = kl_mask(kl, model.kl_p95_[li].expand_as(kl[0])).float().mean(1)
            k = kl.mean(1)
            print(f"{level:5d}  {float(k[touched].mean()):12.4f}  {float(k[~touched].mean()):10.4f}  "
                  f"{float(m[touched].mean()):20.3f}  {float(m[~touched].mean()):18.3f}")


if __name__ == "__main__":
    main()
