"""The location-scale stage with a batch covariate of many levels (a consortium's sites): seconds and agreement.

Fits :class:`normcore.tabular.location_scale.LocationScale` with one covariate's level curves (what a diffusion
model's batch covariate gets) on a synthetic table: ``--rows`` rows spread over ``--sites`` sites, sex, ages 20-80,
``--d`` IDPs whose site effects shift the mean and tilt its age slope. Prints one JSON line per (sites, rows): the fit's
seconds and a checksum of the leave-one-out standardised residuals it returns; with ``--save DIR`` the residuals are
written there, and ``--compare DIR`` reports the largest difference from residuals saved by another run (e.g. of an
earlier commit through ``--root``), so before and after run the same script.

    .venv/bin/python benchmarks/many_sites.py --grid 100x5000,300x10000 [--root /tmp/before] [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def table(n_sites: int, n: int, d: int, seed: int = 0):
    """(age, codes [sex, site], y) of the synthetic table."""
    rng = np.random.default_rng(seed)
    site, sex, age = rng.integers(0, n_sites, n), rng.integers(0, 2, n), rng.uniform(20, 80, n)
    shift, tilt = rng.normal(0, 1, (n_sites, d)), rng.normal(0, 0.2, (n_sites, d))
    y = 100 - 0.5 * age[:, None] + 5 * shift[site] + tilt[site] * (age[:, None] - 50) + rng.normal(0, 5, (n, d))
    return age, np.column_stack([sex, site]), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--grid", default="100x5000,300x10000", help="SITESxROWS, comma-separated")
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", default=None)
    ap.add_argument("--compare", default=None)
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    from threadpoolctl import threadpool_limits

    from normcore.tabular.location_scale import LocationScale

    for cell in args.grid.split(","):
        n_sites, n = (int(v) for v in cell.split("x"))
        age, codes, y = table(n_sites, n, args.d)
        with threadpool_limits(args.threads):
            start = time.perf_counter()
            stage = LocationScale(curves=(1,))
            r = stage.fit_transform(age, codes, y, [2, n_sites])
            seconds = time.perf_counter() - start
        row = {"root": args.root, "sites": n_sites, "rows": n, "idps": args.d, "threads": args.threads,
               "seconds": round(seconds, 2), "residual_sum": round(float(np.abs(r).sum()), 6),
               "curve_penalty": stage.curve_penalty}
        name = f"residuals_{n_sites}x{n}.npy"
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            np.save(Path(args.save) / name, r)
        if args.compare and (Path(args.compare) / name).is_file():
            row["max_abs_difference"] = float(np.abs(r - np.load(Path(args.compare) / name)).max())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
