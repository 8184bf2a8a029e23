"""Evaluation of an imaging model on a labelled test cohort: restoration fidelity and anomaly detection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from normcore.imaging.anomaly import TOPS, anomaly_map, centile_among, voxel_zmap
from normcore.imaging.model import METHODS, ImagingNormativeModel
from normcore.imaging.synthetic import lesion_volume_ml
from normcore.metrics.imaging import best_dice, mae, psnr, ssim3d, subject_auc, voxel_auprc

Z_THRESHOLD = 3.0  # a voxel above it counts as abnormal in the healthy false-positive share


def evaluate_restoration(model: ImagingNormativeModel, vols: np.ndarray, brains: np.ndarray, ages, sexes,
                         truth: np.ndarray, labels, seed: int, healthy_of: np.ndarray | None = None,
                         log: Callable[[str], None] | None = None) -> dict:
    """Restoration and detection metrics of every method on one labelled test cohort.

    ``vols``/``brains``/``truth`` are (N, X, Y, Z) on the model grid; healthy rows (``labels`` 0) have
    all-false truth. Per method: healthy-scan MAE / PSNR / SSIM inside the brain, subject-level AUC of
    each abnormality index of ``TOPS`` (``auc_<name>``; and for lesions >= 5 ml), voxel AUPRC and best Dice of the
    anomaly map and of the z-map, median top-1% indices, the healthy scans' centiles of the model's headline index
    (named in ``headline_index``), and for KL-guided inpainting the latent mask share.

    ``healthy_of[i]``: for a lesioned row, the row of the same scan without the lesion (-1 if none);
    then the restoration of the lesioned scan is also compared with that healthy original (pseudo-healthy
    fidelity: MAE inside the lesion and inside the brain).
    """
    labels = np.asarray(labels, int)
    healthy = labels == 0
    start = time.perf_counter()
    restored = model.restore(vols, ages, sexes, METHODS, seed=seed)
    restore_s = (time.perf_counter() - start) / len(vols)
    lesion_ml = np.array([lesion_volume_ml(t, model.grid) for t in truth])
    out = {"n_healthy": int(healthy.sum()), "n_lesion": int((~healthy).sum()),
           "lesion_ml": {"min": float(lesion_ml[~healthy].min()), "median": float(np.median(lesion_ml[~healthy])),
                         "max": float(lesion_ml[~healthy].max()), "n_ge_5ml": int((lesion_ml[~healthy] >= 5).sum())},
           "restore_s_per_subject_all_methods": round(restore_s, 2),
           "headline_index": model.config.headline_index, "methods": {}}
    big = healthy | (lesion_ml >= 5.0)
    for method in [m for m in METHODS if m in restored]:
        rest = restored[method]
        err = np.stack([anomaly_map(v, r, b) for v, r, b in zip(vols, rest, brains, strict=True)])
        maps, scored = model.healthy_errors(vols, rest, brains)
        mean, std = model.error_stats_[method]
        z = np.stack([voxel_zmap(e, mean, std, b) for e, b in zip(maps, scored, strict=True)])
        indices = [model.indices(zz, b) for zz, b in zip(z, scored, strict=True)]
        by_top = {k: np.array([i[k] for i in indices]) for k in TOPS}
        index, headline = by_top["top1"], model.config.headline_index
        les = ~healthy
        above = np.array([(zz[b] > Z_THRESHOLD).mean() for zz, b in zip(z[healthy], scored[healthy], strict=True)])
        centiles = np.array([centile_among(v, model.reference_[method][headline])
                             for v in by_top[headline][healthy]])
        row = {
            "healthy_mae": float(np.mean([mae(v, r, b) for v, r, b in zip(vols[healthy], rest[healthy],
                                                                          brains[healthy], strict=True)])),
            "healthy_psnr": float(np.mean([psnr(v, r, b) for v, r, b in zip(vols[healthy], rest[healthy],
                                                                            brains[healthy], strict=True)])),
            "healthy_ssim": float(np.mean([ssim3d(v, r, b) for v, r, b in zip(vols[healthy], rest[healthy],
                                                                              brains[healthy], strict=True)])),
            **{f"auc_{k}": subject_auc(v, labels) for k, v in by_top.items()},
            **{f"auc_{k}_ge_5ml": subject_auc(v[big], labels[big]) for k, v in by_top.items()},
            "voxel_auprc_anomaly": voxel_auprc(err[les], truth[les], brains[les]),
            "voxel_auprc_z": voxel_auprc(z[les], truth[les], brains[les]),
            "best_dice_anomaly": best_dice(err[les], truth[les], brains[les])[0],
            "best_dice_z": best_dice(z[les], truth[les], brains[les])[0],
            "index_healthy_median": float(np.median(index[healthy])),
            "index_lesion_median": float(np.median(index[les])),
            "healthy_share_z_above_3": float(above.mean()), "healthy_share_z_above_3_max": float(above.max()),
            "healthy_centile_median": float(np.median(centiles)),
            "healthy_centile_share_above_95": float((centiles > 95).mean()),
        }
        if healthy_of is not None:
            pairs = [(i, int(h)) for i, h in enumerate(healthy_of) if h >= 0]
            row["pseudo_healthy_mae_lesion"] = float(np.mean([np.abs(rest[i] - vols[h])[truth[i]].mean()
                                                              for i, h in pairs]))
            row["pseudo_healthy_mae_brain"] = float(np.mean([mae(vols[h], rest[i], brains[i]) for i, h in pairs]))
        if method == "kl-inpaint":
            share = restored["kl-inpaint_mask"]
            row["latent_mask_share_healthy"] = float(share[healthy].mean())
            row["latent_mask_share_lesion"] = float(share[les].mean())
        out["methods"][method] = {k: round(float(v), 4) for k, v in row.items()}
        if log is not None:
            log(f"{method} {json.dumps(out['methods'][method])}")
    return out
