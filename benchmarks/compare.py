"""Side-by-side benchmark: diffusion backbones vs classic per-IDP baselines, same splits, one run.

    .venv/bin/python benchmarks/compare.py [--out benchmarks/results/compare.json] [--threads 2]

Synthetic truth (D = 2, 10, 50; 5000 training controls; 2000 held-out controls + 200 patients with
known shifts): ACE against the exact truth, coverage, PIT-KS pass rate, dependence error vs the
product-of-marginals reference, memorisation, clinical AUC, fit and score time. fcon1000 from
../shared/data (all usable IDPs, 80/20 split stratified by site, sex and site as covariates):
held-out calibration, MSLL/EXPV, dependence, fit + score time. SAINT is run where its cost on this CPU
allows (see SAINT_LIMITS); skipped cells are reported with the reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.registry import make_model  # noqa: E402
from normcore.tabular import read_table, resolve_idps, validate_table  # noqa: E402
from normcore.tabular.baselines.pcntoolkit_blr import PCNToolkitBLR, pcntoolkit_available  # noqa: E402
from normcore.tabular.evaluation import evaluate  # noqa: E402
from normcore.tabular.synthetic import SyntheticTruth  # noqa: E402

FCON = ROOT.parent / "shared" / "data" / "tabular" / "fcon1000.csv"
MODELS = ("film-mlp", "saint", "shash-baseline", "pcntoolkit-blr")
# SAINT attends over one token per IDP: on 2 CPU cores a training step at D=50 takes ~0.27 s and
# sampling 4000 rows ~3.5 s (D=216: 1.4 s and 21 s), so it runs here only at small D, with a reduced
# step budget and M for scoring; the same code runs the full configuration on a GPU.
SAINT_LIMITS = {"max_d": 10, "epochs_steps": 2000, "score_samples": 100, "holdout": 500}


def build(name: str, seed: int, n_train: int, d: int):
    if name == "pcntoolkit-blr":
        return PCNToolkitBLR(seed=seed)
    params = {"seed": seed}
    if name == "saint":
        params["epochs"] = max(1, SAINT_LIMITS["epochs_steps"] // max(1, int(0.9 * n_train) // 256))
    return make_model(name, **params)


def skip_reason(name: str, d: int) -> str | None:
    if name == "pcntoolkit-blr" and not pcntoolkit_available():
        return "PCNtoolkit not installed"
    if name == "saint" and d > SAINT_LIMITS["max_d"]:
        return f"SAINT at D={d} on this CPU: est. hours (see SAINT_LIMITS)"
    return None


def run_one(name, train, holdout, age, covs, idps, truth, group_col, seed) -> dict:
    reason = skip_reason(name, len(idps))
    if reason:
        return {"model": name, "skipped": reason}
    model = build(name, seed, len(train), len(idps))
    start = time.perf_counter()
    model.fit(train, age=age, covariates=covs, idps=idps)
    fit_s = time.perf_counter() - start
    n_samples = 1000
    if name == "saint":
        n_samples = SAINT_LIMITS["score_samples"]
        holdout = holdout.sample(min(len(holdout), SAINT_LIMITS["holdout"]), random_state=seed)
    report = evaluate(model, holdout, truth=truth, group_col=group_col, control_value="control", train=train,
                      n_samples=n_samples, seed=seed)
    agg, dep = report["aggregate"], report["dependence"]
    row = {"model": name, "fit_s": round(fit_s, 1), "score_s": round(report["score_time_s"], 1),
           "n_holdout": report["n_holdout"], "M": n_samples if name in ("film-mlp", "saint") else "exact",
           "coverage50": agg["coverage50_mean"], "coverage90": agg["coverage90_mean"],
           "coverage95": agg["coverage95_mean"], "ace_heldout": agg["ace_heldout_mean"],
           "pit_ks_pass_0.01": agg["pit_ks_pass_rate_0.01"], "msll": agg["msll_mean"], "expv": agg["expv_mean"],
           "dep_model": dep["frobenius_model"], "dep_product_of_marginals": dep["frobenius_product_of_marginals"],
           "dep_oracle": dep.get("frobenius_oracle"),
           "energy_model": dep.get("energy_model"), "energy_pom": dep.get("energy_product_of_marginals"),
           "mem_ratio": report["memorisation"]["ratio"],
           "mem_share_closer_train": report["memorisation"]["share_closer_to_train"]}
    if "truth" in report:
        row["ace_truth"] = report["truth"]["ace"]
    if "clinical" in report:
        clin = {r["score"]: r for r in report["clinical"]}
        row["auc_mean_abs_z"] = clin["mean_abs_z"]["auc"]
        row["auc_multivariate"] = clin["multivariate_d2"]["auc"]
    print(json.dumps(row), flush=True)
    return row


def synthetic_suite(d: int, seed: int, models=MODELS) -> list[dict]:
    truth = SyntheticTruth.create(d=d, seed=seed)
    train = truth.sample(5000, seed=seed + 1)
    holdout = truth.sample(2000, seed=seed + 2, patients=200, patient_shift=1.5)
    idps = truth.idp_names
    return [{"dataset": f"synthetic D={d}", **run_one(m, train, holdout, "age", ["sex"], idps, truth, "group", seed)}
            for m in models]


def fcon_split(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    df = read_table(FCON)
    idps = resolve_idps(df, exclude=["age", "sex", "site", "sub_id", "avg_en"])
    report = validate_table(df, "age", ["sex", "site"], idps, id_col="sub_id")
    idps = [c for c in idps if c not in report.constant_idps]
    df = df.drop(index=df.index[report.rows_with_missing]).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    test_idx = []
    for _, grp in df.groupby("site"):
        idx = rng.permutation(grp.index.to_numpy())
        test_idx.extend(idx[: int(round(0.2 * len(idx)))])
    test = df.loc[sorted(test_idx)].reset_index(drop=True)
    train = df.drop(index=test_idx).reset_index(drop=True)
    return train, test, idps


def fcon_suite(seed: int, models=MODELS) -> list[dict]:
    if not FCON.is_file():
        return [{"dataset": "fcon1000", "skipped": f"{FCON} not found"}]
    train, test, idps = fcon_split(seed)
    print(f"fcon1000: {len(train)} train / {len(test)} test, {len(idps)} IDPs", flush=True)
    return [{"dataset": f"fcon1000 ({len(idps)} IDPs)",
             **run_one(m, train, test, "age", ["sex", "site"], idps, None, None, seed)} for m in models]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compare.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d", default="2,10,50")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-fcon", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    args = ap.parse_args()
    models = tuple(m for m in args.models.split(",") if m)
    unknown = set(models) - set(MODELS)
    if unknown:
        ap.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    torch.set_num_threads(args.threads)
    rows = []
    start = time.perf_counter()
    for d in (int(x) for x in args.d.split(",") if x):
        rows += synthetic_suite(d, args.seed, models)
    if not args.skip_fcon:
        rows += fcon_suite(args.seed, models)
    result = {"machine": f"{platform.machine()}, {args.threads} torch threads, "
                         f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
              "torch": torch.__version__, "total_s": round(time.perf_counter() - start), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {args.out} in {result['total_s']} s")


if __name__ == "__main__":
    main()
