"""Benchmark of the tabular engine on the synthetic truth (issue: engine acceptance numbers).

Fits each backbone on N=5000 synthetic controls (D=10, default settings), then measures against the
exact truth: ACE of centile curves over ages 20-90 (step 2), both sexes, quantiles 0.02..0.98; the
coverage of the central 95% interval and per-IDP PIT KS tests on 2000 fresh controls; fit time;
scoring time for 1000 subjects with M=1000; sampling throughput (network rows x steps per second: M samples for
each of the scoring's shared covariate points, ``score_points``) and the machine's float32 matmul throughput
measured in the same run.

``--blocks B`` also fits a model of B IDPs on each consecutive block of the same truth's IDPs (same rows, same
seed) and reports their curve ACE beside the D-IDP model's on the same IDPs (``ace_blocks``,
``ace_ratio_same_idps``): what modelling D IDPs jointly costs each IDP, free of how hard a particular truth's IDPs
are (a D = 10 truth is another draw of IDP shapes than the first ten of a D = 200 one).

    .venv/bin/python benchmarks/engine.py [--backbones film-mlp,saint] [--threads 2] [--blocks B] [--out results.json]
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
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from normcore import NormativeDiffusion, make_synthetic  # noqa: E402


def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n x n matrix product of ``dtype`` on ``device`` (float32 without TF32: torch's default)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def machine_record(threads: int) -> tuple[torch.device, float, dict]:
    """Set torch's CPU threads; return the device, its float32 matmul GFLOP/s and a results header naming both."""
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = matmul_gflops(device)
    return device, peak, {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                                     f"threads, {device.type}", "torch": torch.__version__,
                          "matmul_gflop_per_s": round(peak, 1), "runs": []}


def ace_against_truth(model: NormativeDiffusion, truth, ages: np.ndarray, qs: np.ndarray) -> tuple[float, list]:
    errs = []
    for sex in (0, 1):
        cur = model.centiles(ages, tuple(qs), fixed={"sex": sex})  # default M: max(n_samples, 4000)
        for name in model.idps:
            c = cur[cur.idp == name]
            p = truth.cdf(c["value"].to_numpy(), c["age"].to_numpy(), sex, name)
            errs.append(float(np.abs(p - c["quantile"].to_numpy()).mean()))
    per_idp = np.asarray(errs).reshape(2, -1).mean(0)
    return float(np.mean(errs)), per_idp.round(5).tolist()


def network_flops_per_row(model: NormativeDiffusion) -> float:
    """Multiply-adds x 2 of the per-sample layers (condition embedding is shared and excluded)."""
    total = 0
    for name, p in model.net_.named_parameters():
        if p.dim() == 2 and "embed" not in name and "film" not in name and not name.startswith("marginal."):
            total += p.numel()
    marginal = getattr(model.net_, "marginal", None)
    if marginal is not None:  # the per-IDP path applies its hidden and output layers once per IDP
        width = marginal.hidden.in_features
        total += len(model.idps) * (width * width + 2 * width)
    return 2.0 * total


def blocks_ace(backbone: str, df, truth, seed: int, block: int) -> dict:
    """Curve ACE of models fitted on consecutive blocks of ``block`` IDPs of one table (see the module docstring)."""
    per_idp, fit_s = [], 0.0
    for lo in range(0, truth.d, block):
        idps = truth.idp_names[lo:lo + block]
        start = time.perf_counter()
        model = NormativeDiffusion(backbone=backbone, seed=seed).fit(
            df.drop(columns=[c for c in truth.idp_names if c not in idps]), age="age", covariates=["sex"], idps=idps)
        fit_s += time.perf_counter() - start
        per_idp += ace_against_truth(model, truth, np.arange(20, 91, 2.0), np.linspace(0.02, 0.98, 25))[1]
    return {"blocks": block, "ace_blocks": round(float(np.mean(per_idp)), 5), "ace_blocks_per_idp": per_idp,
            "blocks_fit_s": round(fit_s, 1)}


def run(backbone: str, n: int, d: int, seed: int, block: int = 0) -> dict:
    df, truth = make_synthetic(n, d=d, seed=seed)
    start = time.perf_counter()
    model = NormativeDiffusion(backbone=backbone, seed=seed).fit(df, age="age", covariates=["sex"],
                                                                 idps=truth.idp_names)
    fit_s = time.perf_counter() - start
    ace, ace_per_idp = ace_against_truth(model, truth, np.arange(20, 91, 2.0), np.linspace(0.02, 0.98, 25))
    fresh = truth.sample(2000, seed=seed + 1000)
    start = time.perf_counter()
    scores = model.score(fresh.head(1000), n_samples=1000)
    score_s = time.perf_counter() - start
    scores = model.score(fresh, n_samples=1000)
    cov, ks = [], []
    for name in truth.idp_names:
        u = scores[f"centile:{name}"].to_numpy()
        cov.append(float(np.mean((u > 0.025) & (u < 0.975))))
        ks.append(float(stats.kstest(u, "uniform").pvalue))
    sched = model.schedule_
    if model.sampler.startswith("dpm"):
        chain = sched.respaced_log_snr(model.sampling_steps, model.log_snr_start)
    else:
        chain = sched.respaced(model.sampling_steps)
    # network rows: scoring draws 1000 samples per covariate point (age grid x levels), shared by its subjects
    points = len(model._score_points(*model._covariates_of(fresh.head(1000), "table"))[0])
    rows_steps = points * 1000 * len(chain)
    h = model.history_
    same_idps = {}
    if 0 < block < d:
        same_idps = blocks_ace(backbone, df, truth, seed, block)
        same_idps["ace_ratio_same_idps"] = round(ace / float(np.mean(same_idps["ace_blocks_per_idp"])), 4)
    return {
        "backbone": backbone, "n": n, "d": d, "fit_s": round(fit_s, 1), "train_steps": h["steps"],
        "best_step": h["best_step"], "kept_step": h.get("kept_step"), "ace": round(ace, 4), "ace_per_idp": ace_per_idp,
        "coverage95_mean": round(float(np.mean(cov)), 4), "coverage95_per_idp": np.round(cov, 3).tolist(),
        "pit_ks_p": np.round(ks, 4).tolist(), "pit_ks_pass_0.01": int(np.sum(np.asarray(ks) > 0.01)),
        "score_1000x1000_s": round(score_s, 1), "score_points": points, "rows_steps_per_s": round(rows_steps / score_s),
        "network_gflop_per_s": round(rows_steps * network_flops_per_row(model) / score_s / 1e9, 1), **same_idps,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", default="film-mlp,saint")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=0, help="also fit models of this many IDPs on blocks of the truth")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device, peak, results = machine_record(args.threads)
    for backbone in args.backbones.split(","):
        r = run(backbone, args.n, args.d, args.seed, args.blocks)
        r["fraction_of_matmul_peak"] = round(r["network_gflop_per_s"] / peak, 3)
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}))


if __name__ == "__main__":
    main()
