"""Accuracy of extreme z-scores against the exact synthetic truth: the tail model vs the capped sample ranks.

    .venv/bin/python benchmarks/tails.py [--threads 2] [--n 100] [--seed 0] [--samples M] [--out FILE]

The shipped demo FiLM-MLP was trained on the demo cohort, whose generator (models/demo-cohort.truth.json) gives
every value's exact z. For --n demo controls' covariates, each IDP gets a value at a true z drawn uniformly in
3 <= |z| <= 6 (either side), built with the truth's exact quantile function; the model scores them with its
default M and the tail model on (``TAIL_SHARE``) and off (ranks only, |z| capped at 3.29 for M = 1000). Reports
the median |z error| per band of true |z|, the mean signed error (negative: |z| too small) and the same per IDP
and side; and, on --n other demo controls (their own values), coverage of the central 95% and the mean |z| with the tail
model on and off (the body of the distribution must be unchanged). Writes benchmarks/results/tails.json (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import special

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import normcore.tabular.scoring as scoring  # noqa: E402
from dashboard.demo import demo_cohort  # noqa: E402
from normcore.registry import load_model  # noqa: E402
from normcore.tabular.synthetic import SyntheticTruth  # noqa: E402

BANDS = ((3, 4), (4, 5), (5, 6.01), (3, 6.01))


def score_z(model, table, tail: bool, seed: int, samples: int | None = None) -> tuple[np.ndarray, float]:
    share = scoring.TAIL_SHARE
    scoring.TAIL_SHARE = share if tail else 0.0
    try:
        start = time.perf_counter()
        scores = model.score(table, n_samples=samples, seed=seed)
        return scores[[f"z:{c}" for c in model.idps_]].to_numpy(float), time.perf_counter() - start
    finally:
        scoring.TAIL_SHARE = share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=None, help="M (default: the model's, 1000)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tails.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(ROOT / "models" / "demo-film-mlp")
    truth = SyntheticTruth.load(ROOT / "models" / "demo-cohort.truth.json")
    demo = demo_cohort()
    controls = demo[demo.group == "control"].sample(2 * args.n, random_state=args.seed).reset_index(drop=True)
    extreme, body = controls.iloc[:args.n].copy(), controls.iloc[args.n:].reset_index(drop=True)
    rng = np.random.default_rng(args.seed)
    shape = (len(extreme), len(model.idps_))
    wanted = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(3, 6, size=shape)
    for j, name in enumerate(model.idps_):
        extreme[name] = truth.quantile(special.ndtr(wanted[:, j]), extreme.age.to_numpy(), extreme.sex.to_numpy(),
                                       name)
    true = np.column_stack([truth.true_z(extreme[c].to_numpy(), extreme.age.to_numpy(), extreme.sex.to_numpy(), c)
                            for c in model.idps_])
    out = {"model": "demo-film-mlp", "n_samples": args.samples or model.n_samples, "tail_share": scoring.TAIL_SHARE,
           "n_values": int(true.size), "threads": args.threads}
    for tail in (False, True):
        z, seconds = score_z(model, extreme, tail, args.seed, args.samples)
        name = "tail model" if tail else "ranks only (capped)"
        rows = {}
        for lo, hi in BANDS:
            sel = (np.abs(true) >= lo) & (np.abs(true) < hi)
            signed = ((z - true) * np.sign(true))[sel]  # negative: |z| too small
            rows[f"{lo}-{min(hi, 6):g}"] = {"median_abs_error": round(float(np.median(np.abs(signed))), 3),
                                            "mean_signed_error": round(float(signed.mean()), 3), "n": int(sel.sum())}
        per_idp = {}
        for j, idp in enumerate(model.idps_):
            for side, sign in (("low", -1), ("high", 1)):
                sel = np.sign(true[:, j]) == sign
                per_idp[f"{idp} {side}"] = round(float(np.median(np.abs(z[sel, j] - true[sel, j]))), 2)
        zb, _ = score_z(model, body, tail, args.seed + 1, args.samples)
        out[name] = {"bands": rows, "per_idp_side_median_abs_error": per_idp, "score_s": round(seconds, 1),
                     "body_coverage95": round(float(np.mean(np.abs(zb) < 1.959964)), 4),
                     "body_mean_abs_z": round(float(np.mean(np.abs(zb))), 4)}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
