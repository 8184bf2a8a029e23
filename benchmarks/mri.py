"""Imaging benchmark: pseudo-healthy restoration and anomaly detection, KL-guided inpainting vs baselines.

    .venv/bin/python benchmarks/mri.py [--model models/mri-ixi-cpu] [--threads 2] [--parts ixi,synthetic]

IXI part (needs ../shared/data): the shipped model's held-out test scans (ids in its card) are
preprocessed like any user scan (registration to MNI with their brain masks); each is scored healthy
and with one real MS lesion mask (../shared/data/mri/lesion_masks_mni, on the model grid) implanted as a
T1-hypointense lesion. Synthetic part: a model of the same configuration is trained on synthetic
healthy brains (normcore.imaging.synthetic) and tested on held-out synthetic healthy and lesioned
brains. Reported per method (KL-guided inpainting, plain restoration from one noise level, autoencoder
reconstruction): healthy-scan MAE / PSNR / SSIM inside the brain, subject-level AUC of the abnormality
index (top 1%) lesioned vs healthy (all lesions and lesions >= 5 ml), voxel-level AUPRC and best Dice
of the anomaly map (|scan - restoration|) and of the z-map, and time per subject. IXI only: pseudo-healthy
fidelity, the MAE between the restoration of a lesioned scan and the same scan without the lesion,
inside the lesion and inside the brain; and the same held-out scans with a synthetic 5 ml ball implanted in white
matter instead (``spheres``). Healthy rows also give the share of brain voxels above z = 3 and their index centiles
among the model's healthy reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.imaging.cohort import find_file, load_cohort  # noqa: E402
from normcore.imaging.evaluation import evaluate_restoration  # noqa: E402
from normcore.imaging.model import ImagingNormativeModel  # noqa: E402
from normcore.imaging.pipeline import score_scan  # noqa: E402
from normcore.imaging.synthetic import (  # noqa: E402
    SyntheticBrains,
    implant_lesion,
    make_benchmark,
    real_lesion_masks,
    spherical_lesions,
)

SHARED = ROOT.parent / "shared" / "data" / "mri"
IXI = SHARED / "ixi"
LESIONS = SHARED / "lesion_masks_mni"
SPHERE_ML = 5.0  # the "synthetic ~5 ml spherical lesions"


def ixi_part(model_dir: Path, seed: int) -> dict:
    model = ImagingNormativeModel.load(model_dir)
    test_ids = model.card_.get("data", {}).get("test_ids", [])
    if not test_ids or not IXI.is_dir():
        return {"skipped": "no held-out ids in the model card or ../shared/data/mri/ixi absent"}
    start = time.perf_counter()
    cohort = load_cohort(IXI / "t1", IXI / "participants.csv", model.grid, masks=IXI / "brainmask_labels",
                         ids=test_ids, intensity_inset_mm=model.config.intensity_inset_mm)
    prep_s = (time.perf_counter() - start) / len(test_ids)
    vols, brains, ages, sexes = cohort.volumes, cohort.brains, cohort.ages.tolist(), cohort.sexes
    masks = real_lesion_masks(model.grid, LESIONS)
    lesioned, truth = [], []
    for i in range(len(vols)):
        name, mask, _ = masks[i % len(masks)]
        lesion = mask & brains[i]
        lesioned.append(implant_lesion(vols[i], lesion, model.grid, seed=seed + i))
        truth.append(lesion)
    all_vols = np.concatenate([vols, np.stack(lesioned)])
    all_truth = np.concatenate([np.zeros_like(brains), np.stack(truth)])
    n = len(vols)
    res = evaluate_restoration(model, all_vols, np.concatenate([brains, brains]), ages * 2, sexes * 2, all_truth,
                               [0] * n + [1] * n, seed, healthy_of=np.r_[np.full(n, -1), np.arange(n)], log=print)
    # The same scans with one synthetic ball of SPHERE_ML in white matter each (lesions this project never trained on).
    balls = spherical_lesions(model.grid, brains, SPHERE_ML, seed)
    with_balls = np.stack([implant_lesion(v, b, model.grid, seed=seed + 1000 + i)
                           for i, (v, b) in enumerate(zip(vols, balls, strict=True))])
    print(f"spherical {SPHERE_ML:g} ml lesions:")
    res["spheres"] = evaluate_restoration(model, np.concatenate([vols, with_balls]), np.concatenate([brains, brains]),
                                          ages * 2, sexes * 2, np.concatenate([np.zeros_like(brains), np.stack(balls)]),
                                          [0] * n + [1] * n, seed, healthy_of=np.r_[np.full(n, -1), np.arange(n)],
                                          log=print)
    res["preprocess_s_per_scan"] = round(float(prep_s), 2)
    # End to end, as `mri-score` runs it: load, register, restore (KL-guided), maps (5 scans).
    times = []
    for sid, age, sex in list(zip(cohort.ids, ages, sexes, strict=True))[:5]:
        t = time.perf_counter()
        score_scan(model, find_file(IXI / "t1", sid), age, sex, mask=find_file(IXI / "brainmask_labels", sid))
        times.append(time.perf_counter() - t)
    res["end_to_end_s_per_scan"] = {"median": round(float(np.median(times)), 2), "all": [round(x, 2) for x in times]}
    res["model"] = str(model_dir)
    res["training"] = model.training_
    return res


def synthetic_part(config: str, seed: int, n_train: int, n_val: int, n_test: int, overrides: dict) -> dict:
    model = ImagingNormativeModel(config, seed=seed, **overrides)
    grid = model.grid
    gen = SyntheticBrains(grid, seed)
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 85, n_train + n_val)
    sexes = rng.integers(0, 2, n_train + n_val)
    t = time.perf_counter()
    vols, brains = gen.healthy(ages, sexes, seed=seed)
    gen_s = time.perf_counter() - t
    model.fit(vols[:n_train], brains[:n_train], ages[:n_train], sexes[:n_train], vols[n_train:], brains[n_train:],
              ages[n_train:], sexes[n_train:])
    bench = make_benchmark(grid, n_test, n_test, seed + 100, lesion_dir=LESIONS if LESIONS.is_dir() else None)
    res = evaluate_restoration(model, bench["volumes"], bench["masks"], bench["ages"], bench["sexes"],
                               bench["lesion_masks"], bench["labels"], seed, log=print)
    res.update(training=model.training_, n_train=n_train, n_val=n_val, generate_s=round(gen_s, 1),
               lesion_source=bench["lesion_source"], config=config, overrides=overrides)
    return res


def card_scan_folders(card: dict) -> tuple[dict, Path, Path | None]:
    """A model card's ``data`` record with its scan and mask folders (``mri-fit`` records them relative to the
    repository); exits with a message when the scans are absent."""
    data = card["data"]
    images, masks = ROOT / data["images"], ROOT / data["masks"] if data.get("masks") else None
    if not images.is_dir():
        sys.exit(f"{images} is absent (it lives in ../shared/data)")
    return data, images, masks


def store_card_metrics(model_dir: Path, metrics: dict, key: str = "metrics") -> None:
    """Replace the model card's ``key`` (default ``metrics``) by ``metrics`` (JSON only, atomically; the weights are
    untouched)."""
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text())
    card[key] = metrics
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=1, allow_nan=True))
    tmp.replace(card_path)


def update_card(model_dir: Path, ixi: dict) -> None:
    """Write the held-out IXI metrics into the model card."""
    store_card_metrics(model_dir, {"benchmark": "benchmarks/mri.py --parts ixi (held-out IXI scans, real MS lesions "
                                                "implanted; spheres: a 5 ml ball in white matter instead)",
                                   **{k: ixi[k] for k in ("n_healthy", "n_lesion", "lesion_ml",
                                                          "end_to_end_s_per_scan")},
                                   "methods": ixi["methods"],
                                   **({"spheres": ixi["spheres"]} if "spheres" in ixi else {})})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "mri-ixi-cpu"))
    ap.add_argument("--parts", default="ixi,synthetic")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic-config", default="cpu")
    ap.add_argument("--synthetic-overrides", default="{}", help="JSON config overrides for the synthetic model")
    ap.add_argument("--synthetic-n", default="80,16,20", help="train, validation, test (per class) sizes")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mri.json"))
    ap.add_argument("--update-card", action="store_true", help="store the IXI results in the model card's metrics")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    result.update(machine=f"{platform.machine()}, {args.threads} torch threads, "
                          f"{'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}",
                  torch=torch.__version__)
    parts = args.parts.split(",")
    if "ixi" in parts:
        start = time.perf_counter()
        result["ixi"] = ixi_part(Path(args.model), args.seed)
        result["ixi"]["wall_s"] = round(time.perf_counter() - start)
        if args.update_card and "methods" in result["ixi"]:
            update_card(Path(args.model), result["ixi"])
    if "synthetic" in parts:
        start = time.perf_counter()
        n_train, n_val, n_test = (int(x) for x in args.synthetic_n.split(","))
        result["synthetic"] = synthetic_part(args.synthetic_config, args.seed, n_train, n_val, n_test,
                                             json.loads(args.synthetic_overrides))
        result["synthetic"]["wall_s"] = round(time.perf_counter() - start)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
