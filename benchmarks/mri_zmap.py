"""How quiet are the z-maps on healthy brains, and what makes them quieter without losing lesions?

    .venv/bin/python benchmarks/mri_zmap.py [--model models/mri-ixi-cpu] [--threads 2]

The shipped model's 17 healthy validation scans (ids in its card) calibrate each variant; its 20 held-out test
scans are scored healthy and with a real MS lesion mask implanted (as benchmarks/mri.py does), all restored once
with KL-guided inpainting. Variants of the anomaly map before the voxel statistics: as now (|scan - restoration|),
Gaussian smoothing (sigma in mm), a 3x3x3 median filter; and scoring only voxels at least one voxel inside the
brain's edge (erosion); the scan's own median error level subtracted or divided out (per-scan level). Per
variant: the share of brain voxels with z > 3 on the healthy test scans (false positives), the subject AUC of
the abnormality index (top 1%; all lesions and >= 5 ml), the voxel AUPRC of the z-map, and the healthy test
scans' index centile spread. Writes benchmarks/results/mri_zmap.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.imaging.anomaly import (  # noqa: E402
    abnormality_index,
    anomaly_map,
    centile_among,
    healthy_error_stats,
    leave_one_out_indices,
    voxel_zmap,
)
from normcore.imaging.cohort import load_cohort  # noqa: E402
from normcore.imaging.model import ImagingNormativeModel  # noqa: E402
from normcore.imaging.synthetic import implant_lesion, lesion_volume_ml, real_lesion_masks  # noqa: E402
from normcore.metrics.imaging import subject_auc, voxel_auprc  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "mri"
IXI = SHARED / "ixi"
LESIONS = SHARED / "lesion_masks_mni"


def prepared(model, ids):
    """(volumes, brains, ages, sexes) of the listed IXI scans with their label-map masks."""
    c = load_cohort(IXI / "t1", IXI / "participants.csv", model.grid, masks=IXI / "brainmask_labels", ids=ids,
                    intensity_inset_mm=model.config.intensity_inset_mm)
    return c.volumes, c.brains, c.ages.tolist(), c.sexes


def variant_maps(errors: np.ndarray, brains: np.ndarray, smooth_mm: float, median: bool, spacing: float,
                 per_scan: str = ""):
    out = errors.astype(np.float32).copy()
    if per_scan:  # a scan-wide error level (intensity or registration misfit) taken out: lesions are local
        level = np.array([np.median(e[b]) for e, b in zip(out, brains, strict=True)], np.float32)[:, None, None, None]
        out = out / np.maximum(level, 1e-6) if per_scan == "ratio" else out - level
    if median:
        out = np.stack([ndimage.median_filter(e, size=3) for e in out])
    if smooth_mm:
        sigma = smooth_mm / spacing
        w = np.stack([ndimage.gaussian_filter(b.astype(np.float32), sigma) for b in brains])
        out = np.stack([ndimage.gaussian_filter(e, sigma) for e in out]) / np.maximum(w, 1e-3)  # within the brain
    return np.where(brains, out, 0.0).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "mri-ixi-cpu"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ImagingNormativeModel.load(args.model)
    data = model.card_["data"]
    start = time.perf_counter()
    val = prepared(model, data["validation_ids"])
    test = prepared(model, data["test_ids"])
    masks = real_lesion_masks(model.grid, LESIONS)
    lesioned, truth = [], []
    for i, vol in enumerate(test[0]):
        lesion = masks[i % len(masks)][1] & test[1][i]
        lesioned.append(implant_lesion(vol, lesion, model.grid, seed=args.seed + i))
        truth.append(lesion)
    n = len(test[0])
    vols = np.concatenate([val[0], test[0], np.stack(lesioned)])
    brains = np.concatenate([val[1], test[1], test[1]])
    ages, sexes = val[2] + test[2] * 2, val[3] + test[3] * 2
    prep_s = time.perf_counter() - start
    start = time.perf_counter()
    restored = model.restore(vols, ages, sexes, ("kl-inpaint",), seed=args.seed)["kl-inpaint"]
    restore_s = time.perf_counter() - start
    errors = np.stack([anomaly_map(v, r, b) for v, r, b in zip(vols, restored, brains, strict=True)])
    nv = len(val[0])
    labels = np.r_[np.zeros(n, int), np.ones(n, int)]
    truth = np.concatenate([np.zeros_like(test[1]), np.stack(truth)])
    lesion_ml = np.array([lesion_volume_ml(t, model.grid) for t in truth])
    big = (labels == 0) | (lesion_ml >= 5.0)
    spacing = float(model.grid.spacing_mm)
    out = {"model": args.model, "n_validation": nv, "n_test": n, "lesion_ml_median": float(np.median(lesion_ml[n:])),
           "n_lesions_ge_5ml": int((lesion_ml[n:] >= 5).sum()), "preprocess_s": round(prep_s, 1),
           "restore_s": round(restore_s, 1), "variants": {}}
    for name, smooth, median, erode, per_scan in (
            ("as now", 0.0, False, False, ""), ("edge eroded", 0.0, False, True, ""),
            ("median 3x3x3", 0.0, True, False, ""), ("gaussian 4 mm", 4.0, False, False, ""),
            ("gaussian 4 mm + edge eroded", 4.0, False, True, ""), ("gaussian 6 mm", 6.0, False, False, ""),
            ("per-scan level subtracted", 0.0, False, False, "difference"),
            ("per-scan level divided", 0.0, False, False, "ratio"),
            ("per-scan level subtracted + edge eroded", 0.0, False, True, "difference"),
            ("per-scan level divided + edge eroded", 0.0, False, True, "ratio")):
        inner = np.stack([ndimage.binary_erosion(b) for b in brains]) if erode else brains
        maps = variant_maps(errors, brains, smooth, median, spacing, per_scan)
        mean, std = healthy_error_stats(maps[:nv], inner[:nv])
        z = np.stack([voxel_zmap(e, mean, std, b) for e, b in zip(maps[nv:], inner[nv:], strict=True)])
        index = np.array([abnormality_index(zz, b, 0.01) for zz, b in zip(z, inner[nv:], strict=True)])
        reference = leave_one_out_indices(maps[:nv], inner[:nv], 0.01)
        healthy_fp = [float((zz[b] > 3).mean()) for zz, b in zip(z[:n], inner[nv:nv + n], strict=True)]
        centiles = [centile_among(v, reference) for v in index[:n]]
        les = labels == 1
        out["variants"][name] = {
            "healthy_share_z_gt_3": round(float(np.mean(healthy_fp)), 5),
            "healthy_share_z_gt_3_max": round(float(np.max(healthy_fp)), 5),
            "auc_top1": round(subject_auc(index, labels), 4),
            "auc_top1_ge_5ml": round(subject_auc(index[big], labels[big]), 4),
            "voxel_auprc_z": round(voxel_auprc(z[les], truth[les], inner[nv:][les]), 4),
            "healthy_centile_median": round(float(np.median(centiles)), 1),
            "healthy_centiles_above_95": int(np.sum(np.array(centiles) > 95))}
        print(name, json.dumps(out["variants"][name]), flush=True)
    (ROOT / "benchmarks" / "results" / "mri_zmap.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
