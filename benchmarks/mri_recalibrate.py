"""Recalibrate a fitted imaging model: other z-map settings, or a cross-fitted healthy reference.

    .venv/bin/python benchmarks/mri_recalibrate.py models/mri-ixi-cpu --error-scale scan-median --edge-erosion 1
    .venv/bin/python benchmarks/mri_recalibrate.py models/mri-ixi-cpu --cross-fit 5 [--keep /tmp/oof.npz]
    .venv/bin/python benchmarks/mri_recalibrate.py models/mri-ixi-cpu --error-power 0.6667 --from-kept /tmp/oof.npz
    .venv/bin/python benchmarks/mri_recalibrate.py models/mri-ixi-cpu --index-margin 1 --from-kept /tmp/oof.npz
    .venv/bin/python benchmarks/mri_recalibrate.py models/mri-ixi-cpu --headline-index peak --index-within-template \
        --from-kept /tmp/oof.npz

Sets the configuration's ``error_scale`` and ``edge_erosion`` (normcore.imaging.config), re-runs the preprocessing
of the card's validation scans (paths relative to the repository, as mri-fit recorded them) and the model's own
``calibrate`` (KL thresholds, voxel error statistics, leave-one-out reference indices), and saves the model in
place (the network weights are unchanged; the card keeps its data, attribution, metrics and acquisition and gains
``recalibration``). Used once for the shipped CPU model (BENCHMARKS.md: quiet z-maps).

With ``--cross-fit K`` the KL thresholds stay as they are (the validation scans') and the voxel error statistics and
the index reference are rebuilt from out-of-fold restorations of every healthy scan the card lists (training and
validation ids; normcore.imaging.crossfit), each fold denoiser trained on the others with the model's own first
stage. ``--keep`` saves the out-of-fold error maps (npz) for analysis. ``--error-power`` sets the exponent of the
scaled error maps (config ``error_power``); ``--from-kept`` rebuilds the reference from kept out-of-fold maps instead
of cross-fitting again (the restorations do not depend on the exponent, so this equals a new cross-fit). Used for the
shipped CPU model (BENCHMARKS.md: cross-fitted reference). ``--index-margin`` sets how many more voxels of the brain's
edge the index leaves out (config ``index_margin``), with ``--cross-fit`` or ``--from-kept`` (BENCHMARKS.md: an index
that does not follow the mask's edge). ``--headline-index`` names the index the model leads with (config
``headline_index``) and ``--index-within-template`` has the index rank only voxels inside the template's brain
(config ``index_within_template``), also with ``--cross-fit`` or ``--from-kept``, which rebuild every index's
reference (BENCHMARKS.md: a peak index). Either of these records ``reference_rebuilt`` (date, source,
index_margin, error_power, index_within_template, headline_index) in the card.
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

from normcore.imaging.anomaly import TOPS  # noqa: E402
from normcore.imaging.cohort import load_cohort  # noqa: E402
from normcore.imaging.config import ImagingConfig  # noqa: E402
from normcore.imaging.crossfit import use_cross_fitted_reference  # noqa: E402
from normcore.imaging.model import ImagingNormativeModel  # noqa: E402

WRITTEN_BY_SAVE = {"format", "format_version", "config_name", "config", "seed", "age_mean", "age_std", "age_range",
                   "sex_coding", "training", "history"}


def cross_fit_reference(model: ImagingNormativeModel, images: Path, participants: Path, masks: Path | None,
                        folds: int, keep: str | None) -> None:
    """The model's reference rebuilt from out-of-fold restorations of its card's training and validation scans."""
    ids = model.card_["data"]["train_ids"] + model.card_["data"]["validation_ids"]
    t = time.perf_counter()
    cohort = load_cohort(images, participants, model.grid, masks=masks, ids=ids,
                         intensity_inset_mm=model.config.intensity_inset_mm)
    print(f"{len(ids)} healthy scans preprocessed in {time.perf_counter() - t:.0f} s", flush=True)
    before = {m: np.asarray(model.reference_[m]["top1"]) for m in model.reference_}
    last = [0.0]

    def log(stage, done, total, **_):
        if time.perf_counter() - last[0] > 60 or done == total:
            last[0] = time.perf_counter()
            print(f"{stage}: {done}/{total}", flush=True)

    ref = use_cross_fitted_reference(model, cohort.volumes, cohort.brains, cohort.ages, cohort.sexes, ids=cohort.ids,
                                     folds=folds, progress=log)
    for m, old in before.items():
        new = model.reference_[m]["top1"]
        print(f"{m}: reference index (top 1%) median {np.median(old):.2f} over {len(old)} -> {np.median(new):.2f} "
              f"over {len(new)}", flush=True)
    if keep:
        np.savez_compressed(keep, fold=ref.fold, ids=np.array(cohort.ids), ages=cohort.ages,
                            error_power=model.config.error_power,
                            **{f"errors_{m}": e for m, (e, _) in ref.errors.items()},
                            **{f"scored_{m}": s for m, (_, s) in ref.errors.items()})


def reference_from_kept(model: ImagingNormativeModel, kept: str) -> None:
    """The reference rebuilt from out-of-fold maps saved by ``--keep``, at the model's current ``error_power``."""
    z = np.load(kept, allow_pickle=False)
    if [str(i) for i in z["ids"]] != model.reference_info_.get("ids"):
        sys.exit(f"{kept} holds other scans than the model's cross-fitted reference")
    power = model.config.error_power / float(z["error_power"]) if "error_power" in z.files else model.config.error_power
    errors = {}
    for m in model.reference_:
        maps, scored = z[f"errors_{m}"], z[f"scored_{m}"]
        errors[m] = (np.where(scored, maps.astype(np.float64) ** power, 0.0).astype(np.float32), scored)
    model.set_reference(errors, model.reference_info_)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--error-scale", default="scan-median", choices=list(ImagingConfig.ERROR_SCALES))
    ap.add_argument("--edge-erosion", type=int, default=1)
    ap.add_argument("--cross-fit", type=int, default=0, metavar="K",
                    help="rebuild the reference from K-fold out-of-fold restorations of all healthy scans (0: no)")
    ap.add_argument("--keep", default=None, help="with --cross-fit: save the out-of-fold error maps here (.npz)")
    ap.add_argument("--error-power", type=float, default=None, help="exponent of the scaled error maps (config)")
    ap.add_argument("--index-margin", type=int, default=None, help="edge voxels left out of the index (config)")
    ap.add_argument("--headline-index", default=None, choices=list(TOPS),
                    help="the index the model leads with (config headline_index)")
    ap.add_argument("--index-within-template", action="store_true",
                    help="the index ranks only voxels inside the template's brain (config index_within_template)")
    ap.add_argument("--from-kept", default=None, help="rebuild the cross-fitted reference from a --keep file")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ImagingNormativeModel.load(args.model, device="cpu")
    card = model.card_
    data, images, masks = card_scan_folders(card)
    start = time.perf_counter()
    extra = {k: v for k, v in card.items() if k not in WRITTEN_BY_SAVE}
    if args.error_power is not None:
        model.config = model.config.replace(error_power=args.error_power)
    if args.index_margin is not None:
        if not (args.cross_fit or args.from_kept):
            sys.exit("--index-margin needs --cross-fit or --from-kept (the index reference is rebuilt from them)")
        model.config = model.config.replace(index_margin=args.index_margin)
    if args.headline_index is not None or args.index_within_template:
        if not (args.cross_fit or args.from_kept):
            sys.exit("--headline-index and --index-within-template need --cross-fit or --from-kept (every index's "
                     "reference is rebuilt from them)")
        if args.headline_index is not None:
            model.config = model.config.replace(headline_index=args.headline_index)
        if args.index_within_template:
            model.config = model.config.replace(index_within_template=True)
    if args.cross_fit or args.from_kept:
        if args.from_kept:
            reference_from_kept(model, args.from_kept)
        else:
            cross_fit_reference(model, images, ROOT / data["participants"], masks, args.cross_fit, args.keep)
        extra.pop("reference", None)
        extra["reference_rebuilt"] = {"date": datetime.now(UTC).strftime("%Y-%m-%d"),
                                      "from": "kept out-of-fold maps" if args.from_kept else "a fresh cross-fit",
                                      "index_margin": model.config.index_margin,
                                      "error_power": model.config.error_power,
                                      "index_within_template": model.config.index_within_template,
                                      "headline_index": model.config.headline_index}
        model.save(args.model, card_extra=extra)
        print(json.dumps({k: v for k, v in model.reference_info_.items() if k != "ids"}))
        return
    val = load_cohort(images, ROOT / data["participants"], model.grid, masks=masks, ids=data["validation_ids"],
                      intensity_inset_mm=model.config.intensity_inset_mm)
    model.config = model.config.replace(error_scale=args.error_scale, edge_erosion=args.edge_erosion)
    model.calibrate(val.volumes, val.brains, val.ages.tolist(), val.sexes)
    extra["recalibration"] = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "error_scale": args.error_scale,
                              "edge_erosion": args.edge_erosion, "n_validation": len(val.ids),
                              "seconds": round(time.perf_counter() - start, 1),
                              "why": "quieter healthy z-maps and a better index (BENCHMARKS.md: quiet z-maps)"}
    model.save(args.model, card_extra=extra)
    print(json.dumps(extra["recalibration"]))


if __name__ == "__main__":
    main()
