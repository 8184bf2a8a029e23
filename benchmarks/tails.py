"""Accuracy of extreme z-scores against the exact synthetic truth: the tail model vs the capped sample ranks.

    .venv/bin/python benchmarks/tails.py [--threads 2] [--n 100] [--seed 0] [--samples M] [--out FILE]
        [--model DIR] [--tail-scale gaussianised|residual] [--fit-from F] [--parts demo,truths,fcon1000]
        [--sampling-noise sobol|pseudo-random]

``demo`` (default): the shipped demo FiLM-MLP was trained on the demo cohort, whose generator
(models/demo-cohort.truth.json) gives every value's exact z. For --n demo controls' covariates, each IDP gets a value
at a true z drawn uniformly in 3 <= |z| <= 6 (either side), built with the truth's exact quantile function; the model
scores them with its default M and the tail model on (``TAIL_SHARE``) and off (ranks only, |z| capped at 3.29 for
M = 1000). Reports the median |z error| per band of true |z|, the mean signed error (negative: |z| too small) and the
same per IDP and side; and, on --n other demo controls (their own values), coverage of the central 95% and the mean
|z| with the tail model on and off (the body of the distribution must be unchanged).

``truths``: the same measure on synthetic truths the demo model never saw (D = 10, truth seeds 7 and 11), each with
FiLM-MLPs fitted with two seeds on 5000 of its controls (the demo model's recipe); and the tail model's calibration
on 3000 fresh ordinary controls: values beyond a 1% anchor should have a conditional centile min(u, 1 - u) / 0.01
uniform on (0, 1), and its Kolmogorov-Smirnov distance from uniform is reported (``exceedance_ks``).

``fcon1000``: real data has no exact z, so the check there is calibration of the extremes: FiLM-MLPs fitted on the
site-stratified 80% of fcon1000 (benchmarks/compare.py's split, two split seeds) score the held-out 20% of healthy
subjects, and the share of |z| beyond 1.96 / 2.576 / 3.29 / 3.89 is reported (nominal 5% / 1% / 0.1% / 0.01%), with
the number of subjects with any |z| beyond 3.29, the largest |z| and ``exceedance_ks`` as above. Skipped when
../shared/data is absent.

``--tail-scale`` sets every model's ``tail_scale``; ``--fit-from`` (an experiment) overrides that scale's
``scoring.TAIL_FIT_FROM`` (the median for the Gaussianised scale, the outer quarter for the residual one).
Writes benchmarks/results/tails.json (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import special, stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import normcore.tabular.scoring as scoring  # noqa: E402
from dashboard.demo import demo_cohort  # noqa: E402
from normcore.diffusion.noise import SAMPLING_NOISE  # noqa: E402
from normcore.registry import load_model, make_model  # noqa: E402
from normcore.tabular.synthetic import SyntheticTruth  # noqa: E402

BANDS = ((3, 4), (4, 5), (5, 6.01), (3, 6.01))
OTHER_TRUTHS = (7, 11)
MODEL_SEEDS = (0, 1)
FCON_SPLITS = (0, 1)


def score_z(model, table, tail: bool, seed: int, samples: int | None = None) -> tuple[np.ndarray, float]:
    share = scoring.TAIL_SHARE
    scoring.TAIL_SHARE = share if tail else 0.0
    try:
        start = time.perf_counter()
        scores = model.score(table, n_samples=samples, seed=seed)
        return scores[[f"z:{c}" for c in model.idps_]].to_numpy(float), time.perf_counter() - start
    finally:
        scoring.TAIL_SHARE = share


def extremes(truth: SyntheticTruth, table, idps: list[str], seed: int):
    """``table`` with every IDP set to a value at a true z uniform in 3 <= |z| <= 6 (either side), and those z."""
    rng = np.random.default_rng(seed)
    wanted = rng.choice([-1.0, 1.0], size=(len(table), len(idps))) * rng.uniform(3, 6, size=(len(table), len(idps)))
    out = table.copy()
    age, sex = out.age.to_numpy(), out.sex.to_numpy()
    for j, name in enumerate(idps):
        out[name] = truth.quantile(special.ndtr(wanted[:, j]), age, sex, name)
    true = np.column_stack([truth.true_z(out[c].to_numpy(), age, sex, c) for c in idps])
    return out, true


def exceedance_ks(u: np.ndarray) -> dict:
    """KS distance from uniform of the conditional centiles of values beyond the tail anchors (see the docstring)."""
    tail = np.minimum(u, 1 - u)
    share = scoring.TAIL_SHARE
    e = tail[tail < share] / share
    return {"exceedances": int(e.size), "exceedance_ks": round(float(stats.kstest(e, "uniform").statistic), 3)}


def centiles(model, table, idps: list[str], samples: int | None, seed: int) -> np.ndarray:
    return model.score(table, n_samples=samples, seed=seed)[[f"centile:{c}" for c in idps]].to_numpy(float)


def errors(z: np.ndarray, true: np.ndarray) -> dict:
    rows = {}
    for lo, hi in BANDS:
        sel = (np.abs(true) >= lo) & (np.abs(true) < hi)
        signed = ((z - true) * np.sign(true))[sel]  # negative: |z| too small
        rows[f"{lo}-{min(hi, 6):g}"] = {"median_abs_error": round(float(np.median(np.abs(signed))), 3),
                                        "mean_signed_error": round(float(signed.mean()), 3), "n": int(sel.sum())}
    return rows


def demo_part(args) -> dict:
    model = load_model(args.model)
    model.set_params(sampling_noise=args.sampling_noise, tail_scale=args.tail_scale)
    truth = SyntheticTruth.load(ROOT / "models" / "demo-cohort.truth.json")
    demo = demo_cohort()
    controls = demo[demo.group == "control"].sample(2 * args.n, random_state=args.seed).reset_index(drop=True)
    extreme, body = controls.iloc[:args.n].copy(), controls.iloc[args.n:].reset_index(drop=True)
    extreme, true = extremes(truth, extreme, model.idps_, args.seed)
    out = {"model": Path(args.model).name, "n_samples": args.samples or model.n_samples,
           "tail_share": scoring.TAIL_SHARE, "n_values": int(true.size)}
    for tail in (False, True):
        z, seconds = score_z(model, extreme, tail, args.seed, args.samples)
        name = "tail model" if tail else "ranks only (capped)"
        per_idp = {}
        for j, idp in enumerate(model.idps_):
            for side, sign in (("low", -1), ("high", 1)):
                sel = np.sign(true[:, j]) == sign
                per_idp[f"{idp} {side}"] = round(float(np.median(np.abs(z[sel, j] - true[sel, j]))), 2)
        zb, _ = score_z(model, body, tail, args.seed + 1, args.samples)
        out[name] = {"bands": errors(z, true), "per_idp_side_median_abs_error": per_idp, "score_s": round(seconds, 1),
                     "body_coverage95": round(float(np.mean(np.abs(zb) < 1.959964)), 4),
                     "body_mean_abs_z": round(float(np.mean(np.abs(zb))), 4)}
    return out


def truths_part(args) -> list[dict]:
    rows = []
    for truth_seed in OTHER_TRUTHS:
        truth = SyntheticTruth.create(d=10, seed=truth_seed)
        train = truth.sample(5000, seed=100)
        extreme, true = extremes(truth, truth.sample(args.n, seed=555), truth.idp_names, args.seed + 1)
        for model_seed in MODEL_SEEDS:
            model = make_model("film-mlp", seed=model_seed, sampling_noise=args.sampling_noise,
                               tail_scale=args.tail_scale)
            model.fit(train, age="age", covariates=["sex"], idps=truth.idp_names)
            z, _ = score_z(model, extreme, True, args.seed, args.samples)
            rows.append({"truth_seed": truth_seed, "model_seed": model_seed, "bands": errors(z, true),
                         **exceedance_ks(centiles(model, truth.sample(3000, seed=999), truth.idp_names, args.samples,
                                                  args.seed))})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def fcon_part(args) -> list[dict] | dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare import FCON, fcon_split

    if not FCON.is_file():
        return {"skipped": f"{FCON} not found"}
    rows = []
    for split in FCON_SPLITS:
        train, test, idps = fcon_split(split)
        model = make_model("film-mlp", seed=split, sampling_noise=args.sampling_noise, tail_scale=args.tail_scale)
        model.fit(train, age="age", covariates=["sex", "site"], idps=idps)
        scores = model.score(test, n_samples=args.samples, seed=split)
        a = np.abs(scores[[f"z:{c}" for c in idps]].to_numpy(float))
        rows.append({"split_seed": split, "n_subjects": len(test), "n_idps": len(idps),
                     **{f"share_beyond_{t}": round(float(np.mean(a > t)), 5) for t in (1.96, 2.576, 3.29, 3.89)},
                     "subjects_with_any_beyond_3.29": int((a > 3.29).any(axis=1).sum()),
                     "max_abs_z": round(float(a.max()), 1),
                     **exceedance_ks(scores[[f"centile:{c}" for c in idps]].to_numpy(float))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=None, help="M (default: the model's, 1000)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tails.json"))
    ap.add_argument("--model", default=str(ROOT / "models" / "demo-film-mlp"),
                    help="a diffusion model fitted on the demo cohort's generator (default: the shipped demo FiLM-MLP)")
    ap.add_argument("--tail-scale", choices=scoring.TAIL_SCALES, default=scoring.TAIL_SCALES[0])
    ap.add_argument("--fit-from", type=float, default=None, help="default: the scale's scoring.TAIL_FIT_FROM")
    ap.add_argument("--sampling-noise", choices=SAMPLING_NOISE, default=SAMPLING_NOISE[0],
                    help="noise behind the models' samples (default: sobol, the models' default)")
    ap.add_argument("--parts", default="demo", help="comma-separated: demo, truths, fcon1000")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.fit_from is not None:
        scoring.TAIL_FIT_FROM[args.tail_scale] = args.fit_from
    args.fit_from = scoring.TAIL_FIT_FROM[args.tail_scale]
    parts = args.parts.split(",")
    out = {"threads": args.threads, "tail_scale": args.tail_scale, "tail_fit_from": args.fit_from,
           "sampling_noise": args.sampling_noise}
    if "demo" in parts:
        out.update(demo_part(args))
    if "truths" in parts:
        out["other_truths"] = truths_part(args)
    if "fcon1000" in parts:
        out["fcon1000_heldout"] = fcon_part(args)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
