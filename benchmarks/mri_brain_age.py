"""Give a saved imaging model (restoration model or diffusion autoencoder) its brain-age read-out without
retraining it.

    .venv/bin/python benchmarks/mri_brain_age.py models/mri-ixi-diffae-cpu [--threads 2]
    .venv/bin/python benchmarks/mri_brain_age.py models/mri-ixi-cpu

The read-out (normcore.imaging.brain_age) depends only on the first stage and the healthy scans, so this re-runs the
preprocessing of the card's training and validation scans (paths relative to the repository, as mri-fit recorded
them), fits it with the model's own ``fit_brain_age`` (what ``mri-fit`` now does at the end of training, either method),
and saves the model in place: the network weights are unchanged, the card keeps everything else it had and gains
``brain_age`` and ``brain_age_added`` (with the read-out's error, gap spread and share above the 95th centile on
the card's held-out test scans). Used once for each shipped CPU model (BENCHMARKS.md: brain age).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mri import card_scan_folders  # noqa: E402  (benchmarks/mri.py)

from normcore.imaging.cohort import load_cohort  # noqa: E402
from normcore.imaging.diffae import NormativeDiffusionAutoencoder  # noqa: E402
from normcore.registry import load_model  # noqa: E402

WRITTEN_BY_SAVE = {"format", "format_version", "config_name", "config", "seed", "age_mean", "age_std", "age_range",
                   "sex_coding", "training", "history", "brain_age"}
"""Card keys every imaging model's ``save`` writes itself (the rest are kept as they are)."""
DIFFAE_WRITTEN_BY_SAVE = {"semantic_dim", "inversion_steps", "matched_k", "covariate_dropout", "age_guidance",
                          "age_supervision", "latent_prior", "latent_model_params", "latent_model"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", kind=("imaging", "diffae"))
    card = model.card_
    data, images, masks = card_scan_folders(card)
    start = time.perf_counter()
    cohorts = [load_cohort(images, ROOT / data["participants"], model.grid, masks=masks, ids=data[key],
                           intensity_inset_mm=model.config.intensity_inset_mm)
               for key in ("train_ids", "validation_ids")]
    train, val = cohorts
    if train.ids != data["train_ids"] or val.ids != data["validation_ids"]:
        sys.exit("the card's scans could not all be preprocessed again")
    readout = model.fit_brain_age(train.volumes, train.ages, val.volumes, val.ages)
    written = WRITTEN_BY_SAVE | (DIFFAE_WRITTEN_BY_SAVE if isinstance(model, NormativeDiffusionAutoencoder) else set())
    extra = {k: v for k, v in card.items() if k not in written}
    heldout = None
    if data.get("test_ids"):  # the held-out scans, scored like any user scan of the same preparation
        test = load_cohort(images, ROOT / data["participants"], model.grid, masks=masks, ids=data["test_ids"],
                           intensity_inset_mm=model.config.intensity_inset_mm)
        scores = model.brain_age(test.volumes, test.ages)
        centiles = np.array([b.centile for b in scores])
        heldout = {"n": len(scores), "mae_years": round(float(np.mean([abs(b.raw_gap_years) for b in scores])), 2),
                   "gap_years_mean": round(float(np.mean([b.gap_years for b in scores])), 2),
                   "gap_years_sd": round(float(np.std([b.gap_years for b in scores], ddof=1)), 2),
                   "share_centile_above_0.95": round(float(np.mean(centiles > 0.95)), 3),
                   "mean_age_baseline_mae_years": round(float(np.abs(test.ages - train.ages.mean()).mean()), 2)}
    extra["brain_age_added"] = {"date": datetime.now(UTC).strftime("%Y-%m-%d"),
                                "seconds": round(time.perf_counter() - start, 1),
                                "by": "benchmarks/mri_brain_age.py (the weights are unchanged)",
                                "heldout_test_scans": heldout}
    model.save(args.model, card_extra=extra)
    print(json.dumps({"alpha": readout.alpha_, "reference_mae_years": round(readout.reference_mae_, 2),
                      "bias": [round(float(b), 4) for b in readout.bias_], **extra["brain_age_added"]}))


if __name__ == "__main__":
    main()
