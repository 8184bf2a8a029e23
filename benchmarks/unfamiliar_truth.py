"""A synthetic truth outside the family the models were developed on, scored against its exact z.

    .venv/bin/python benchmarks/unfamiliar_truth.py [--models film-mlp,shash-baseline] [--n 4000] [--seed 0]
        [--threads 2] [--root DIR]

``normcore.tabular.synthetic.SyntheticTruth`` (ages 15-95, smooth curves, spread rising with age, normal, skewed and
bimodal deviates) is the truth every tabular default was measured on. This one differs on purpose, as another
cohort would: a lifespan sample (ages 5-90) with fast childhood growth and a decline after 35, a spread that peaks
in adolescence and rises again in old age, Student-t tails (4 degrees of freedom, unit variance) on half of the 8
IDPs and a skew that changes sign with age on the other half, one common factor (latent correlation 0.49), and four
sites with their own shift, age slope, spread and age range (a children's site aged 5-20, two adult sites 18-90, an
older site 55-90). Every IDP is a monotone map of a latent normal score, so each value's exact z is that score.

Each model is fitted on ``--n`` controls (covariates sex and site) and scores 2000 fresh controls and 1000
patients whose first three IDPs sit at true |z| 3-6 (either side). One JSON line per model: fit and score seconds;
on the controls the median |z error|, the mean |centile error| (overall, under age 20, per IDP and per site), the
mean coverage of the central 95% and the share of IDPs whose centiles pass a KS test of uniformity (alpha 0.01);
on the patients the median |z error| (all three IDPs and each), the median model |z| per band of true |z| and
the number of z and multivariate z that are not finite. ``--root`` imports normcore from another checkout (before
and after).
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
from scipy import special, stats

D = 8
SITES = {"children": (5.0, 20.0), "adult_a": (18.0, 90.0), "adult_b": (18.0, 90.0), "older": (55.0, 90.0)}
SITE_SHARE = (0.2, 0.3, 0.3, 0.2)
T_DOF = 4.0
FACTOR_LOADING = 0.7
PATIENT_IDPS = 3


class UnfamiliarTruth:
    """The generator and its exact z (see the module docstring); its parameters are drawn from a fixed seed."""

    def __init__(self, seed: int = 1234):
        rng = np.random.default_rng(seed)
        self.site_shift = {k: rng.normal(0, 0.4, D) for k in SITES}
        self.site_slope = {k: rng.normal(0, 0.3, D) for k in SITES}
        self.site_scale = {k: float(np.exp(rng.normal(0, 0.15))) for k in SITES}
        self.sex_effect = rng.uniform(-0.4, 0.4, D)

    @staticmethod
    def location(age: np.ndarray, j: int) -> np.ndarray:
        growth = np.log(age / 5.0)
        decline = np.clip((age - 35.0) / 40.0, 0.0, None)
        if j % 4 == 0:
            return 2 + 1.2 * (1 - np.exp(-(age - 5) / 4)) - 0.8 * decline**2
        if j % 4 == 1:
            return 3 - 0.5 * growth - 0.3 * decline
        if j % 4 == 2:
            return 1 + 0.6 * growth - 1.0 * decline**1.5
        return 2 + 0.8 * np.tanh((age - 12) / 3) - 0.5 * decline

    @staticmethod
    def spread(age: np.ndarray) -> np.ndarray:
        return 0.3 * (1 + 0.8 * np.exp(-(((age - 14) / 5) ** 2)) + 0.6 * np.clip((age - 50) / 40, 0.0, None))

    @staticmethod
    def deviate(e: np.ndarray, age: np.ndarray, j: int) -> np.ndarray:
        """The monotone map from the latent normal score to the standardised deviate."""
        if j % 2 == 0:  # Student-t, unit variance
            return stats.t.ppf(special.ndtr(e), T_DOF) * np.sqrt((T_DOF - 2) / T_DOF)
        eps = 0.7 * (age - 47) / 43  # skew changing sign with age
        return np.sinh(np.arcsinh(e) + eps) - np.sinh(eps)

    def draw(self, n: int, seed: int, patients: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
        """n rows (age, sex, site, idp_1..idp_8) and their exact z (n, D); patients' first IDPs at |z| 3-6."""
        rng = np.random.default_rng(seed)
        site = rng.choice(list(SITES), n, p=SITE_SHARE)
        lo, hi = np.array([SITES[s][0] for s in site]), np.array([SITES[s][1] for s in site])
        age = (lo + (hi - lo) * rng.random(n)).round(2)
        sex = rng.integers(0, 2, n)
        e = FACTOR_LOADING * rng.normal(size=(n, 1)) + np.sqrt(1 - FACTOR_LOADING**2) * rng.normal(size=(n, D))
        if patients:
            e[:, :PATIENT_IDPS] = rng.choice([-1, 1], (n, PATIENT_IDPS)) * rng.uniform(3, 6, (n, PATIENT_IDPS))
        scale = np.array([self.site_scale[s] for s in site])
        cols = {}
        for j in range(D):
            site_effect = np.array([self.site_shift[s][j] + self.site_slope[s][j] * (a - 50) / 40
                                    for s, a in zip(site, age, strict=True)])
            cols[f"idp_{j + 1}"] = (self.location(age, j) + self.sex_effect[j] * sex + 0.3 * site_effect
                                    + self.spread(age) * scale * self.deviate(e[:, j], age, j))
        return pd.DataFrame({"age": age, "sex": sex, "site": site, **cols}), e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="film-mlp,shash-baseline")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    torch.set_num_threads(args.threads)
    from normcore.registry import make_model

    truth = UnfamiliarTruth()
    train, _ = truth.draw(args.n, args.seed)
    controls, e = truth.draw(2000, args.seed + 1)
    patients, ep = truth.draw(1000, args.seed + 2, patients=True)
    idps = [f"idp_{j + 1}" for j in range(D)]
    for name in args.models.split(","):
        model = make_model(name, seed=0)
        start = time.perf_counter()
        model.fit(train, "age", ["sex", "site"], idps)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = model.score(controls, n_samples=1000, seed=0)
        score_s = time.perf_counter() - start
        z = scores[[f"z:{c}" for c in idps]].to_numpy()
        centile_err = np.abs(scores[[f"centile:{c}" for c in idps]].to_numpy() - special.ndtr(e))
        site = controls.site.to_numpy()
        sp = model.score(patients, n_samples=1000, seed=0)
        zp = sp[[f"z:{c}" for c in idps]].to_numpy()
        true_p, model_p = np.abs(ep[:, :PATIENT_IDPS]), np.abs(zp[:, :PATIENT_IDPS])
        in_band = {lo: (true_p >= lo) & (true_p < lo + 1) for lo in (3, 4, 5)}
        bands = {f"{lo}-{lo + 1}": [round(float(np.median(model_p[sel[:, j], j])), 2) for j in range(PATIENT_IDPS)]
                 for lo, sel in in_band.items()}
        patient_err = np.abs(zp[:, :PATIENT_IDPS] - ep[:, :PATIENT_IDPS])
        print(json.dumps({
            "model": name, "n_train": args.n, "seed": args.seed, "fit_s": round(fit_s, 1), "score_s": round(score_s, 1),
            "median_abs_z_err": round(float(np.median(np.abs(z - e))), 4),
            "mean_centile_err": round(float(centile_err.mean()), 4),
            "centile_err_under_20": round(float(centile_err[controls.age.to_numpy() < 20].mean()), 4),
            "centile_err_per_idp": [round(float(v), 4) for v in centile_err.mean(axis=0)],
            "centile_err_per_site": {k: round(float(centile_err[site == k].mean()), 4) for k in SITES},
            "coverage95": round(float((np.abs(z) < 1.96).mean()), 3),
            "pit_ks_pass": float(np.mean([stats.kstest(special.ndtr(z[:, j]), "uniform").pvalue > 0.01
                                          for j in range(D)])),
            "patients_median_abs_z_err": round(float(np.median(patient_err)), 3),
            "patients_median_abs_z_err_per_idp": [round(float(v), 3) for v in np.median(patient_err, axis=0)],
            "patients_median_model_abs_z_by_true_band": bands,
            "patients_z_not_finite": int((~np.isfinite(zp)).sum()), "patients_z_values": int(zp.size),
            "patients_multivariate_z_not_finite": int((~np.isfinite(sp["multivariate_z"].to_numpy())).sum()),
        }), flush=True)


if __name__ == "__main__":
    main()
