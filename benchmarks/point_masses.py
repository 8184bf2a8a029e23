"""Measures that many subjects share exactly at 0: how their values are scored, against an exact truth and on fcon1000.

    .venv/bin/python benchmarks/point_masses.py [--parts synthetic,fcon1000,rare] [--models film-mlp,shash-baseline]
        [--n 2000] [--seed 0] [--k 1,2,3] [--threads 2] [--root DIR]

``synthetic``: a censored truth (a Tobit model). Ages 20-80, sex; four IDPs from one common factor (latent
correlation 0.5): ``absent`` is 0 with probability 0.97 at age 20 falling to 0.85 at 80 (a structure most brains
lack, like ``5th-Ventricle``), ``often_zero`` 0 with probability 0.6 falling to 0.2 (like hypointensities), and
two continuous normal IDPs. A value above 0 has exact centile Phi(e) of its latent score e; a value at 0 has the
randomised centile uniform on [0, p0(age)]. Each model of ``--models`` is fitted on ``--n`` controls and scores 2000
fresh ones. Per
IDP: for the zeros, the share whose centile lies above p0 + 0.02 (impossible under the truth), the shares with
z > 1.96 and z < -1.96 (the truth: 0 and 0.025 / p0 on average) and the z range; for values above 0, the mean
|centile error|; for all values, the KS distance of the centiles from uniform; the share of ``sample``'s draws
below 0 and of the 5% centile curve below 0.

``fcon1000``: `benchmarks/compare.py`'s split 0 (862 training, 216 held-out subjects, 213 IDPs). For the IDPs
whose training minimum 0 is shared by at least 1% of the rows, the held-out zeros' z (range, shares beyond 1.96
either way) and the share of all held-out values beyond |z| 3.29.

``rare``: a measure present (uniform 3-6) in k of 900 training rows (k of ``--k``, each with seeds 1-3), 0 in the
rest, beside a continuous IDP: the z of held-out present values 4.0 and 5.5 and of two zeros, and of ``sample``'s
draws at 40 covariate points x 250, the share present (the truth: k / 900), their range and how many are negative.

``--root`` imports normcore from another checkout (before and after).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import special, stats

HERE = Path(__file__).resolve().parent
IDPS = ("absent", "often_zero", "normal_a", "normal_b")
ZERO_SHARE = {"absent": (0.97, 0.85), "often_zero": (0.6, 0.2)}  # at age 20 and at 80, linear between
SPREAD = {"absent": 10.0, "often_zero": 50.0}


def zero_share(name: str, age: np.ndarray) -> np.ndarray:
    young, old = ZERO_SHARE[name]
    return young + (old - young) * (age - 20) / 60


def draw(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """n controls and their latent scores e (n, 4); a censored IDP is 0 where e <= Phi^-1(p0(age))."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n).round(2)
    sex = rng.integers(0, 2, n)
    e = np.sqrt(0.5) * rng.normal(size=(n, 1)) + np.sqrt(0.5) * rng.normal(size=(n, len(IDPS)))
    cols = {}
    for j, name in enumerate(IDPS):
        if name in ZERO_SHARE:
            cut = special.ndtri(zero_share(name, age))
            cols[name] = np.where(e[:, j] <= cut, 0.0, SPREAD[name] * (e[:, j] - cut)).round(1)
        else:
            cols[name] = 3 + 0.01 * (age - 50) + 0.2 * sex + 0.3 * e[:, j]
    return pd.DataFrame({"age": age, "sex": sex, **cols}), e


def synthetic_part(args, make_model, name: str) -> dict:
    train, _ = draw(args.n, args.seed)
    test, e = draw(2000, args.seed + 1)
    model = make_model(name, seed=0)
    model.fit(train, "age", ["sex"], list(IDPS))
    scores = model.score(test, n_samples=1000, seed=0)
    samples = model.sample(test[["age", "sex"]].iloc[:200], n=200, seed=0)
    curves = model.predict_quantiles(test.iloc[:500], (0.05,))[0]
    age = test.age.to_numpy()
    out = {"part": "synthetic", "model": name, "n_train": args.n, "seed": args.seed}
    for j, name in enumerate(IDPS):
        y = test[name].to_numpy()
        u = scores[f"centile:{name}"].to_numpy(float)
        z = scores[f"z:{name}"].to_numpy(float)
        row = {"ks_uniform": round(float(stats.kstest(u, "uniform").statistic), 4)}
        if name in ZERO_SHARE:
            zero = y == 0
            p0 = zero_share(name, age)
            row.update(zeros=int(zero.sum()),
                       zeros_centile_above_p0=round(float((u[zero] > p0[zero] + 0.02).mean()), 4),
                       zeros_z_above_1_96=round(float((z[zero] > 1.96).mean()), 4),
                       zeros_z_below_minus_1_96=round(float((z[zero] < -1.96).mean()), 4),
                       zeros_z_below_expected=round(float(np.mean(0.025 / p0[zero])), 4),
                       zeros_z_range=[round(float(z[zero].min()), 2), round(float(z[zero].max()), 2)],
                       positive_mean_abs_centile_error=round(float(np.abs(u[~zero] - special.ndtr(e[~zero, j])).mean()),
                                                             4))
            row["samples_below_0"] = round(float((samples[name].to_numpy(float) < 0).mean()), 4)
            row["curve_5pct_below_0"] = round(float((curves[:, j] < 0).mean()), 4)
        else:
            row["mean_abs_centile_error"] = round(float(np.abs(u - special.ndtr(e[:, j])).mean()), 4)
        out[name] = row
    return out


def fcon_part(args, make_model, name: str) -> dict:
    from compare import FCON, fcon_split

    if not FCON.is_file():
        return {"part": "fcon1000", "skipped": f"{FCON} not found"}
    train, test, idps = fcon_split(0)
    model = make_model(name, seed=0)
    model.fit(train, "age", ["sex", "site"], idps)
    scores = model.score(test, n_samples=1000, seed=0)
    z_all = scores[[f"z:{c}" for c in idps]].to_numpy(float)
    out = {"part": "fcon1000", "model": name, "share_beyond_3.29": round(float((np.abs(z_all) > 3.29).mean()), 5)}
    for c in idps:
        tr = train[c].to_numpy(float)
        if tr.min() != 0 or (tr == 0).mean() < 0.01:
            continue
        y, z = test[c].to_numpy(float), scores[f"z:{c}"].to_numpy(float)
        zero = y == 0
        out[c] = {"training_zero_share": round(float((tr == 0).mean()), 3), "held_out_zeros": int(zero.sum()),
                  "zeros_z_range": [round(float(z[zero].min()), 2), round(float(z[zero].max()), 2)],
                  "zeros_z_above_1_96": int((z[zero] > 1.96).sum()),
                  "zeros_z_below_minus_1_96": int((z[zero] < -1.96).sum()),
                  "nonzero_z": [round(float(v), 2) for v in z[~zero][:8]]}
    return out


def rare_part(args, make_model, name: str) -> list[dict]:
    held_out = pd.DataFrame({"age": [30.0, 50.0, 70.0, 50.0], "sex": [0, 1, 0, 1], "rare": [0.0, 4.0, 5.5, 0.0],
                             "normal": [3.3, 3.5, 3.7, 3.5]})
    points = pd.DataFrame({"age": np.linspace(20, 80, 40), "sex": np.arange(40) % 2})
    out = []
    for k in map(int, args.k.split(",")):
        for seed in (1, 2, 3):
            rng = np.random.default_rng(seed)
            age = rng.uniform(20, 80, 900)
            rare = np.zeros(900)
            rare[rng.choice(900, k, replace=False)] = rng.uniform(3, 6, k)
            train = pd.DataFrame({"age": age, "sex": rng.integers(0, 2, 900), "rare": rare,
                                  "normal": 3 + 0.01 * age + 0.3 * rng.normal(size=900)})
            model = make_model(name).fit(train, "age", ["sex"], ["rare", "normal"])
            z = model.score(held_out, seed=0)["z:rare"].to_numpy(float)
            draws = model.sample(points, n=250, seed=1)["rare"].to_numpy(float)
            present = draws[draws != 0]
            out.append({"part": "rare", "model": name, "k": k, "seed": seed,
                        "point_masses": [m[:2] for m in model.point_masses_],
                        "z_present_4_and_5_5": [round(float(v), 2) for v in z[1:3]],
                        "z_zeros": [round(float(v), 2) for v in z[[0, 3]]],
                        "draws_present": round(float(present.size / draws.size), 4),
                        "present_range": [round(float(present.min()), 2), round(float(present.max()), 2)]
                        if present.size else None, "draws_negative": int((draws < 0).sum())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="synthetic,fcon1000")
    ap.add_argument("--models", default="film-mlp,shash-baseline")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", default="1,2,3", help="rare part: training rows in which the measure is present")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", default=str(HERE.parent))
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    torch.set_num_threads(args.threads)
    from normcore.registry import make_model  # from --root, before compare.py puts this checkout first

    sys.path.append(str(HERE.parent))
    for part, run in (("synthetic", synthetic_part), ("fcon1000", fcon_part), ("rare", rare_part)):
        for name in args.models.split(",") if part in args.parts.split(",") else ():
            result = run(args, make_model, name)
            for record in result if isinstance(result, list) else [result]:
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
