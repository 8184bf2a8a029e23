"""Evaluation of an imaging model on a labelled cohort (moved out of the benchmark script)."""

from __future__ import annotations

import numpy as np

from normcore.imaging.evaluation import evaluate_restoration
from normcore.imaging.model import METHODS


def test_every_method_gets_every_metric_on_a_labelled_cohort(tiny_imaging_model, tiny_cohort):
    c = tiny_cohort
    healthy = c["volumes"][12:14]
    brains = c["brains"][12:14]
    truth = np.zeros_like(brains)
    centre = np.argwhere(brains[0]).mean(0).round().astype(int)
    x, y, z = centre
    truth[:, x - 2:x + 2, y - 2:y + 2, z - 2:z + 2] = True
    truth &= brains
    lesioned = np.where(truth, 0.05, healthy).astype(np.float32)
    vols = np.concatenate([healthy, lesioned])
    all_truth = np.concatenate([np.zeros_like(truth), truth])
    logged = []
    out = evaluate_restoration(tiny_imaging_model, vols, np.concatenate([brains, brains]), [40, 50, 40, 50],
                               ["F", "M", "F", "M"], all_truth, [0, 0, 1, 1], seed=0,
                               healthy_of=np.array([-1, -1, 0, 1]), log=logged.append)
    assert out["n_healthy"] == 2 and out["n_lesion"] == 2 and set(out["methods"]) == set(METHODS)
    assert len(logged) == len(METHODS)
    for method, row in out["methods"].items():
        for key in ("healthy_mae", "auc_top1", "voxel_auprc_anomaly", "best_dice_z", "pseudo_healthy_mae_lesion"):
            assert np.isfinite(row[key]), (method, key)
        assert 0 <= row["auc_top1"] <= 1 and 0 <= row["voxel_auprc_z"] <= 1
        assert 0 <= row["healthy_share_z_above_3"] <= row["healthy_share_z_above_3_max"] <= 1
        assert 0 <= row["healthy_centile_median"] <= 100 and row["healthy_centile_share_above_95"] in (0, 0.5, 1)
    assert out["methods"]["kl-inpaint"]["latent_mask_share_lesion"] >= 0
