"""Record what a fitted imaging model's training scans looked like (voxel size, brain-mask coverage, overlap
with the template brain, sharpness) in the card of a restoration model or diffusion autoencoder, for models
trained before mri-fit recorded it.

    .venv/bin/python benchmarks/mri_acquisition.py models/mri-ixi-cpu [--threads 2]

Re-runs the preprocessing of the training scans the card lists (from ``data.images``/``data.masks``, paths
relative to the repository; normalised with the model's ``intensity_inset_mm``, as in training) and writes
``acquisition`` (normcore.imaging.acquisition.envelope) into the card atomically; weights are untouched. Prints the
per-scan facts' range.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore._utils.atomic import write_text_atomic  # noqa: E402
from normcore.imaging.acquisition import envelope  # noqa: E402
from normcore.imaging.cohort import find_file  # noqa: E402
from normcore.imaging.grid import ModelGrid  # noqa: E402
from normcore.imaging.io import load_mask, load_volume  # noqa: E402
from normcore.imaging.preprocess import prepare_scan  # noqa: E402
from normcore.registry import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", kind=("imaging", "diffae"))
    grid: ModelGrid = model.grid
    card_path = Path(args.model) / "model.json"
    card = json.loads(card_path.read_text())
    data = card["data"]
    images, masks = ROOT / data["images"], ROOT / data["masks"] if data.get("masks") else None
    if not images.is_dir():
        sys.exit(f"{images} is absent (it lives in ../shared/data)")
    facts, inset = [], float(model.config.intensity_inset_mm)
    for i, sid in enumerate(data["train_ids"]):
        img = load_volume(find_file(images, sid))
        mask = load_mask(find_file(masks, sid), img) if masks else None
        facts.append(prepare_scan(img, grid, mask=mask, intensity_inset_mm=inset).facts)
        print(f"{i + 1}/{len(data['train_ids'])} {sid} {facts[-1]}", flush=True)
    card["acquisition"] = envelope(facts)
    write_text_atomic(card_path, json.dumps(card, indent=1, allow_nan=True))
    cov, sharp = [f["brain_coverage"] for f in facts], [f["sharpness"] for f in facts]
    print(json.dumps(card["acquisition"]), f"coverage {min(cov):.3f}-{max(cov):.3f}",
          f"sharpness median {float(np.median(sharp)):.3f}")


if __name__ == "__main__":
    main()
