"""Recalibrate a fitted imaging model with other z-map settings, on the healthy validation scans its card lists.

    .venv/bin/python benchmarks/mri_recalibrate.py models/mri-ixi-cpu --error-scale scan-median --edge-erosion 1

Sets the configuration's ``error_scale`` and ``edge_erosion`` (normcore.imaging.config), re-runs the preprocessing
of the card's validation scans (paths relative to the repository, as mri-fit recorded them) and the model's own
``calibrate`` (KL thresholds, voxel error statistics, leave-one-out reference indices), and saves the model in
place (the network weights are unchanged; the card keeps its data, attribution, metrics and acquisition and gains
``recalibration``). Used once for the shipped CPU model (BENCHMARKS.md: quiet z-maps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.imaging.cohort import load_cohort  # noqa: E402
from normcore.imaging.config import ImagingConfig  # noqa: E402
from normcore.imaging.model import ImagingNormativeModel  # noqa: E402

WRITTEN_BY_SAVE = {"format", "format_version", "config_name", "config", "seed", "age_mean", "age_std", "age_range",
                   "sex_coding", "training", "history"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--error-scale", default="scan-median", choices=list(ImagingConfig.ERROR_SCALES))
    ap.add_argument("--edge-erosion", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ImagingNormativeModel.load(args.model, device="cpu")
    card = model.card_
    data = card["data"]
    images, masks = ROOT / data["images"], ROOT / data["masks"] if data.get("masks") else None
    if not images.is_dir():
        sys.exit(f"{images} is absent (it lives in ../shared/data)")
    start = time.perf_counter()
    val = load_cohort(images, ROOT / data["participants"], model.grid, masks=masks, ids=data["validation_ids"])
    model.config = model.config.replace(error_scale=args.error_scale, edge_erosion=args.edge_erosion)
    model.calibrate(val.volumes, val.brains, val.ages.tolist(), val.sexes)
    extra = {k: v for k, v in card.items() if k not in WRITTEN_BY_SAVE}
    extra["recalibration"] = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "error_scale": args.error_scale,
                              "edge_erosion": args.edge_erosion, "n_validation": len(val.ids),
                              "seconds": round(time.perf_counter() - start, 1),
                              "why": "quieter healthy z-maps and a better index (BENCHMARKS.md: quiet z-maps)"}
    model.save(args.model, card_extra=extra)
    print(json.dumps(extra["recalibration"]))


if __name__ == "__main__":
    main()
