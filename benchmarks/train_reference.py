"""Train the shipped reference model models/fcon1000-film-mlp from ../shared/data (the data are never copied).

    .venv/bin/python benchmarks/train_reference.py [--threads 2] [--out models/fcon1000-film-mlp]

FiLM-MLP diffusion model of every usable fcon1000 IDP (FreeSurfer QC columns and all-zero columns left out)
with sex and site as covariates (site a batch effect: a shift, a scale and a penalised age curve per site and IDP,
not an input of the network), fitted on 80% of the subjects (split stratified by site, fixed seed). The other
20% are the held-out check: coverage of the central 95% interval and the PIT-KS pass rate, overall and per site,
stored in the model card with the held-out subject ids, the data source and its terms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.metrics import pit_ks  # noqa: E402
from normcore.registry import make_model  # noqa: E402
from normcore.tabular import read_table, resolve_idps, validate_table  # noqa: E402
from normcore.tabular.validation import is_qc_column  # noqa: E402

FCON = ROOT.parent / "shared" / "data" / "tabular" / "fcon1000.csv"
SOURCE = {
    "name": "fcon1000 (1000 Functional Connectomes Project, FCP/INDI) FreeSurfer IDPs",
    "file": "data/fcon1000.csv of github.com/predictive-clinical-neuroscience/PCNtoolkit-demo, commit 81967c1e",
    "sha256": "6cff2415da82466f5b3cac197947fd30ab2891a2427adedc590fb403844c73fc",
    "attribution": "Biswal et al. (2010) Toward discovery science of human brain function, PNAS 107:4734; the "
                   "1000 Functional Connectomes Project (FCP/INDI); FreeSurfer measures as distributed with "
                   "PCNtoolkit's demo data (Rutherford et al. 2022, Nature Protocols).",
    "terms": "The MRI data come from FCP/INDI releases, whose data-use terms are non-commercial: this model, "
             "derived from them, is for research use only and not for commercial use. Not a diagnostic device.",
    "sex_coding": {"0": "female", "1": "male"},
    "caveats": "Healthy adults and some children aged 7.9-85, mostly 18-30; site and age are confounded (several "
               "sites cover narrow age ranges); site NewYork_a_ADHD comes from an ADHD-study release.",
}


def split(df: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    test = []
    for _, rows in df.groupby("site"):
        idx = rng.permutation(rows.index.to_numpy())
        test.extend(idx[: int(round(0.2 * len(idx)))])
    test_mask = df.index.isin(test)
    return df[~test_mask].reset_index(drop=True), df[test_mask].reset_index(drop=True)


def calibration(scores: pd.DataFrame, idps: list[str]) -> dict:
    z = scores[[f"z:{c}" for c in idps]].to_numpy()
    u = scores[[f"centile:{c}" for c in idps]].to_numpy()
    p = np.array([pit_ks(u[:, j])[1] for j in range(len(idps))])
    return {"n": int(len(scores)), "coverage95": round(float((np.abs(z) < 1.959964).mean()), 4),
            "pit_ks_pass_rate": round(float((p >= 0.01).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "models" / "fcon1000-film-mlp"))
    ap.add_argument("--batch-covariates", default="site",
                    help="covariates modelled as batch effects (default: site, as shipped; '' for none: site is then "
                         "also an input of the network; README, Site adaptation)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not FCON.is_file():
        sys.exit(f"{FCON} is absent (it lives in ../shared/data)")
    df = read_table(FCON)
    idps = [c for c in resolve_idps(df, exclude=["age", "sex", "site", "sub_id"]) if not is_qc_column(c)]
    report = validate_table(df, "age", ["sex", "site"], idps, id_col="sub_id")
    idps = [c for c in idps if c not in report.constant_idps]
    train, test = split(df, args.seed)
    start = time.perf_counter()
    batch = [c for c in args.batch_covariates.split(",") if c]
    model = make_model("film-mlp", seed=args.seed, batch_covariates=batch).fit(
        train, age="age", covariates=["sex", "site"], idps=idps, label="fcon1000 (80%)")
    fit_s = time.perf_counter() - start
    scores = model.score(test, seed=args.seed)
    per_site = {site: calibration(rows, idps) for site, rows in scores.groupby("site")}
    held_out = calibration(scores, idps)
    print(f"fit {fit_s:.0f} s; held-out {held_out}")
    ages = train.groupby("site").age.agg(["min", "max", "count"])
    model.info_ = {
        "title": "fcon1000 healthy reference (FiLM-MLP diffusion)",
        "data": SOURCE,
        "age_range_per_site": {s: {"min": float(r["min"]), "max": float(r["max"]), "n_train": int(r["count"])}
                               for s, r in ages.iterrows()},
        "held_out": {"ids": test["sub_id"].tolist(), "split": "20% per site, numpy seed " + str(args.seed),
                     "calibration": held_out, "calibration_per_site": per_site,
                     # the subject report ranks a subject's multivariate d2 among these healthy new people's
                     "multivariate_d2": sorted(round(float(v), 2) for v in scores.multivariate_d2.dropna()),
                     "multivariate_n_idps": len(idps)},
        "training_command": "benchmarks/train_reference.py" + (f" --batch-covariates {','.join(batch)}" if batch
                                                               else ""), "fit_s": round(fit_s, 1),
    }
    model.save(args.out)
    print(f"saved -> {args.out}")


if __name__ == "__main__":
    main()
