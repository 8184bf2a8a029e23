"""The location-scale stage alone on small or age-skewed fcon1000 training sets: how well it predicts new subjects.

Fits :class:`normcore.tabular.location_scale.LocationScale` (sex as its covariate, every IDP with more distinct values
than half the training rows) on each training set and scores the held-out rows within the training ages:

* ``location_error``: mean over IDPs and rows of ((y - mu) / SD of the IDP in the whole table)^2 (1.0: no better than
  the cohort mean);
* ``log_score``: mean over IDPs of the Gaussian negative log score of y under (mu, sd), in nats, less constants:
  log(sd / SD of the IDP) + z^2 / 2 (lower is better; the scale's quality once the location is given);
* ``median_z2``: median over IDPs of the mean z^2 (1.0: the scale is right on average).

Training sets: half of each site with 40 or more subjects (the other half held out); 80, 160 and 320 subjects drawn
with weights exp(-(age - 20) / 10), three draws each, skewed young (the rest held out); the whole table in five folds.
``--root DIR`` imports normcore from another checkout (a worktree of an earlier commit), so before and after run the
same script. One JSON line per training set, then the means.

    .venv/bin/python benchmarks/location_scale_stage.py [--root /tmp/before]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

FCON = Path(__file__).resolve().parents[2] / "shared" / "data" / "tabular" / "fcon1000.csv"


def training_sets(age: np.ndarray, site: np.ndarray, seed: int = 0):
    """(name, training rows, held-out rows) of every training set (see the module docstring)."""
    rng = np.random.default_rng(seed)
    for s in np.unique(site):
        idx = np.flatnonzero(site == s)
        if len(idx) >= 40:
            perm = rng.permutation(idx)
            yield f"half of {s}", perm[:len(idx) // 2], perm[len(idx) // 2:]
    weight = np.exp(-(age - 20) / 10)
    for n in (80, 160, 320):
        for k in range(3):
            train = rng.choice(len(age), n, replace=False, p=weight / weight.sum())
            yield f"skewed young, n={n}, draw {k}", train, np.setdiff1d(np.arange(len(age)), train)
    perm = rng.permutation(len(age))
    for fold in range(5):
        yield f"whole table, fold {fold}", np.setdiff1d(perm, perm[fold::5]), perm[fold::5]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--data", default=str(FCON))
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    from normcore.tabular.location_scale import LocationScale

    df = pd.read_csv(args.data)
    idps = [c for c in df.columns if c not in ("sub_id", "age", "sex", "site") and pd.api.types.is_numeric_dtype(df[c])]
    age, y = df["age"].to_numpy(float), df[idps].to_numpy(float)
    sex = df["sex"].astype("category").cat.codes.to_numpy()[:, None]
    spread = np.nanstd(y, axis=0)
    rows = []
    for name, train, test in training_sets(age, df["site"].astype(str).to_numpy()):
        test = test[(age[test] >= age[train].min()) & (age[test] <= age[train].max())]
        keep = np.array([np.unique(y[train, j]).size > len(train) // 2 for j in range(len(idps))]) & (spread > 0)
        stage = LocationScale().fit(age[train], sex[train], y[np.ix_(train, keep)], [2])
        mu, sd = stage.location_scale(age[test], sex[test])
        z = (y[np.ix_(test, keep)] - mu) / sd
        row = {"set": name, "n_train": len(train), "n_test": len(test), "idps": int(keep.sum()),
               "location_error": float(np.mean(((y[np.ix_(test, keep)] - mu) / spread[keep]) ** 2)),
               "log_score": float(np.mean(np.log(sd / spread[keep]) + 0.5 * z**2)),
               "median_z2": float(np.median(np.mean(z**2, axis=0)))}
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    means = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("location_error", "log_score", "median_z2")}
    print(json.dumps({"root": args.root, "sets": len(rows), "mean": means}))


if __name__ == "__main__":
    main()
