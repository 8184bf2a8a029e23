"""Both candidates of one fit scored side by side: the trained network early stopping kept and the Gaussian copula.

For the question which validation criterion picks the better of the two: one fit with ``copula_candidate=False``
(so the network is the loss's best trained state), the copula of the same training latents built beside it, and for
each candidate the validation rows' mean CRPS of every IDP's predictive distribution (``--m`` samples per row, on the
Gaussianised scale), their PIT ACE, a Gaussian log score and the energy score, beside the held-out row of
``fit_score.py`` (``--suite``: curve ACE against the exact truth). ``crps_diff_t``: the paired t statistic over rows
of network minus copula CRPS (positive: the copula scores lower). It reads the fit's split by wrapping two private
methods of ``NormativeDiffusion`` (this is a measurement script, not an API).

    .venv/bin/python benchmarks/step0_criteria.py --d 50 --n 1000 --seed 0 --out results.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import fit_score  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import normcore.tabular.diffusion_model as dm  # noqa: E402
from normcore.diffusion.parameterisation import GaussianCopulaResidual  # noqa: E402
from normcore.metrics import sample_crps  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="synthetic", choices=["synthetic", "fcon1000"])
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--n", type=int, default=1000, help="training controls (synthetic)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--m", type=int, default=1000, help="samples per validation row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the rows to this JSON-lines file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    seen: dict = {}
    train_denoiser, calibrate = dm.train_denoiser, dm.NormativeDiffusion._calibrate_multivariate

    def train(net, x_train, c_train, x_val, c_val, schedule, cfg, device, progress, untrained=None):
        seen.update(x_train=x_train, x_val=x_val)
        return train_denoiser(net, x_train, c_train, x_val, c_val, schedule, cfg, device, progress)

    def calibrate_seen(self, x_val, age, codes, progress):
        seen.update(age=age, codes=codes)
        return calibrate(self, x_val, age, codes, progress)

    dm.train_denoiser, dm.NormativeDiffusion._calibrate_multivariate = train, calibrate_seen
    overrides = {"copula_candidate": False, **({"batch_covariates": ["site"]} if a.data == "fcon1000" else {})}
    train_df, holdout, idps, covs, truth = fit_score.split(a.data, a.d, a.seed, 1000, a.n)
    model = fit_score.build(overrides, a.seed)
    start = time.perf_counter()
    model.fit(train_df, age="age", covariates=covs, idps=idps)
    fit_s = time.perf_counter() - start
    copula = GaussianCopulaResidual(model.net_, model.schedule_, len(idps))
    copula.fit_correlation(torch.from_numpy(seen["x_train"]))

    x_val = seen["x_val"].astype(float)
    rows, per_row = [], []
    for name, prior in (("network", {}), ("copula", copula.prior_state())):
        model.prior_ = prior
        s = model._draw(seen["age"], seen["codes"], a.m, 12345, to_values=False).numpy()
        crps = sample_crps(s, x_val)
        pit = (s < x_val[:, None, :]).mean(axis=1)
        levels = np.linspace(0.05, 0.95, 19)
        mu, sd = s.mean(1), s.std(1)
        k = min(200, a.m)
        spread = np.mean([np.linalg.norm(s[:, i] - s[:, (i + 1) % k], axis=1) for i in range(k)], axis=0)
        energy = np.linalg.norm(s[:, :k] - x_val[:, None, :], axis=2).mean(1) - 0.5 * spread
        row = fit_score.score_row(model, a.data, a.d, train_df, holdout, idps, truth, fit_s, a.seed, 1000, overrides)
        if truth is not None:
            row.update(fit_score.suite_metrics(model, train_df, holdout, idps, truth, a.seed))
        row.update(candidate=name, n=a.n, val_crps=float(crps.mean()),
                   val_pit_ace=float(np.mean([abs(np.mean(pit <= q) - q) for q in levels])),
                   val_gauss_nll=float(np.mean(0.5 * ((x_val - mu) / sd) ** 2 + np.log(sd))),
                   val_energy=float(energy.mean()))
        rows.append(row)
        per_row.append(crps.mean(1))
    diff = per_row[0] - per_row[1]
    t = float(diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff))))
    for row in rows:
        row["crps_diff_t"] = round(t, 2)
        print(json.dumps(row, default=str))
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row, default=str) + "\n")


if __name__ == "__main__":
    main()
