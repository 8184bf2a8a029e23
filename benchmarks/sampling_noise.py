"""Monte-Carlo error of scores with quasi-random (scrambled Sobol) and pseudo-random samples, side by side.

    .venv/bin/python benchmarks/sampling_noise.py [--threads 2] [--samples 1000,512] [--n 500] [--parts demo,fcon1000]

For each part, the same subjects are scored by the same model with both ``sampling_noise`` settings, each at every
M of ``--samples``, with two seeds. Reported: the seed-to-seed SD of a z-score (the Monte-Carlo error of one
subject's z: SD of the difference between the two seeds' z over sqrt 2), the mean scoring seconds, and coverage of
the central 95%. ``demo``: the shipped demo FiLM-MLP (10 IDPs) on --n demo controls, whose generator gives exact
z-scores, so the median |z error| and mean |centile error| against the truth are reported too. ``fcon1000``: the
shipped fcon1000 reference (208 IDPs) on the first --n subjects of the table (skipped when ../shared/data is absent).
Writes benchmarks/results/sampling_noise.json (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import special

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard.demo import demo_cohort  # noqa: E402
from normcore.registry import load_model  # noqa: E402
from normcore.tabular.synthetic import SyntheticTruth  # noqa: E402

FCON = ROOT.parent / "shared" / "data" / "tabular" / "fcon1000.csv"
NOISES = ("pseudo-random", "sobol")
SEEDS = (1, 2)


def compare(model, table: pd.DataFrame, samples: list[int], true_z: np.ndarray | None) -> list[dict]:
    cols = [f"z:{c}" for c in model.idps_]
    rows = []
    for m in samples:
        for noise in NOISES:
            model.set_params(sampling_noise=noise)
            zs, seconds = [], []
            for seed in SEEDS:
                start = time.perf_counter()
                zs.append(model.score(table, n_samples=m, seed=seed)[cols].to_numpy(float))
                seconds.append(time.perf_counter() - start)
            ok = np.isfinite(zs[0]) & np.isfinite(zs[1])
            row = {"sampling_noise": noise, "samples": m, "score_s": round(float(np.mean(seconds)), 1),
                   "seed_to_seed_sd_z": round(float(np.std((zs[0] - zs[1])[ok]) / np.sqrt(2)), 4),
                   "coverage95": round(float(np.mean(np.abs(zs[0][ok]) < 1.959964)), 4)}
            if true_z is not None:
                err = zs[0] - true_z
                row.update(median_abs_z_error=round(float(np.median(np.abs(err))), 4),
                           mean_abs_centile_error=round(float(np.mean(np.abs(special.ndtr(zs[0]) -
                                                                           special.ndtr(true_z)))), 4))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", default="1000,512")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--parts", default="demo,fcon1000")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampling_noise.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    samples = [int(m) for m in args.samples.split(",")]
    out = {"threads": args.threads, "seeds": list(SEEDS)}
    if "demo" in args.parts.split(","):
        model = load_model(ROOT / "models" / "demo-film-mlp")
        truth = SyntheticTruth.load(ROOT / "models" / "demo-cohort.truth.json")
        demo = demo_cohort()
        table = demo[demo.group == "control"].sample(args.n, random_state=3).reset_index(drop=True)
        true_z = np.column_stack([truth.true_z(table[c].to_numpy(), table.age.to_numpy(), table.sex.to_numpy(), c)
                                  for c in model.idps_])
        out["demo"] = {"model": "demo-film-mlp", "subjects": len(table), "idps": len(model.idps_),
                       "rows": compare(model, table, samples, true_z)}
    if "fcon1000" in args.parts.split(","):
        if not FCON.is_file():
            out["fcon1000"] = {"skipped": f"{FCON} not found"}
        else:
            model = load_model(ROOT / "models" / "fcon1000-film-mlp")
            table = pd.read_csv(FCON).head(args.n)
            out["fcon1000"] = {"model": "fcon1000-film-mlp", "subjects": len(table), "idps": len(model.idps_),
                               "rows": compare(model, table, samples, None)}
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
