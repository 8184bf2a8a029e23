"""Fit and score one tabular model on a train/holdout split: time, early stopping and calibration in one row.

Datasets: ``fcon1000`` (the site-stratified 80/20 split of benchmarks/compare.py, 213 IDPs less constant ones)
and ``synthetic`` (5000 training controls, D IDPs, 2000 fresh held-out controls from the exact truth).
Reports fit seconds, planned/best/stop step, holdout scoring seconds at M samples, mean coverage of the
central 95% interval, the share of IDPs passing a KS test of uniform PIT (alpha 0.01) and, for the
synthetic truth, the median |z error| against the exact z and the mean absolute centile error; and how the
held-out rows sit on the multivariate score (``mv_*``: shares above its 95th / 99th centile as scored and under
chi2(D), and the model's calibration of it).
With ``--suite`` (synthetic truth only) also the rest of the evaluation suite that scale questions need: the ACE of
the centile curves against the exact truth (:func:`normcore.tabular.evaluation.ace_against_synthetic_truth`; at the
first site, and with ``--sites`` also averaged over every site as ``ace_truth_all_sites``), the
dependence gap (RMS gap between the held-out and generated Spearman matrices) beside its sampling-noise floor (the
same gap for an exact draw of the same size) and the product-of-marginals reference, and the memorisation ratio
(generated rows' nearest-neighbour distance to training over held-out subjects; ~1 without copying), and the
seconds they took.

``--missing F`` removes a share F of the training IDP values completely at random (seeded) before the fit, and
``--drop-incomplete`` then drops every row left incomplete (what fitting did before models trained on incomplete
rows): the pair measures what training on incomplete rows keeps. Held-out rows stay complete, and the memorisation
ratio compares generated rows with the complete training rows.

``--root DIR`` imports normcore from another checkout (e.g. a worktree of an earlier commit), so "before" and
"after" run the same script; ``--set key=value`` overrides a model parameter (e.g. sampling_steps=15);
``--vary key=v1,v2`` scores the one fitted model once per value of a scoring parameter; repeated, once per
combination (e.g. ``--vary sampler=dpm++2m-sde,dpm++3m-sde --vary sampling_steps=15,25``).

    .venv/bin/python benchmarks/fit_score.py --data fcon1000,synthetic [--root /tmp/before] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import special, stats

HERE = Path(__file__).resolve().parent


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split(name: str, d: int, seed: int, holdout_n: int = 2000, n_train: int = 5000, sites: int = 0):
    """(train, holdout, idps, covariates, truth or None); the synthetic truth has ``sites`` sites (covariate
    ``site``, a location and scale effect per site and IDP) when ``sites`` > 0."""
    if name == "fcon1000":
        from compare import fcon_split  # benchmarks/compare.py

        train, test, idps = fcon_split(seed)
        return train, test, idps, ["sex", "site"], None
    from normcore import make_synthetic

    train, truth = make_synthetic(n_train, d=d, seed=seed, n_sites=sites)
    holdout = truth.sample(holdout_n, seed=seed + 1000)
    return train, holdout, truth.idp_names, ["sex", "site"] if sites else ["sex"], truth


def build(overrides: dict, seed: int):
    """The model named by ``overrides["backbone"]`` (default film-mlp; any registry name or pcntoolkit-blr) with the
    other overrides as its parameters; one it does not take ends the run (``make_model`` would leave it out
    silently, and a benchmark must not report a setting it never applied)."""
    from normcore.registry import make_model

    params = dict(overrides)
    name = params.pop("backbone", "film-mlp")
    if name == "pcntoolkit-blr":
        from normcore.tabular.baselines.pcntoolkit_blr import PCNToolkitBLR

        model, accepted = PCNToolkitBLR(seed=seed), set()
    else:
        model = make_model(name, seed=seed, **params)
        accepted = set(model.get_params())
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise SystemExit(f"--set {', '.join(unknown)}: not a parameter of {name}")
    return model


def suite_metrics(model, train, holdout, idps: list[str], truth, seed: int) -> dict:
    """Curve ACE against the truth, dependence gap with its noise floor, memorisation ratio (see the docstring)."""
    from normcore import metrics as M
    from normcore.tabular.evaluation import ace_against_synthetic_truth, dependence_noise_floor, memorisation_check

    start = time.perf_counter()
    # the first site's curves alone are one site's estimate: with sites, every site's too (one pass), averaged
    result = ace_against_synthetic_truth(model, truth, all_sites=bool(truth.n_sites))
    ace_s = time.perf_counter() - start
    per_site = result.get("ace_per_site")
    ace = per_site[truth.site_names[0]] if per_site else result["ace"]
    every_site = {"ace_truth_all_sites": round(result["ace"], 4)} if per_site else {}
    start = time.perf_counter()
    generated = model.sample(holdout[["age", *model.encoder_.categorical]], n=1, seed=seed + 1)
    real = holdout[idps].to_numpy(float)
    pom = M.product_of_marginals(generated, "age", idps, seed=seed)
    memo = memorisation_check(model, generated, train, holdout)
    return {"ace_truth": round(float(ace), 4), **every_site, "ace_s": round(ace_s, 1),
            "dependence_gap": round(M.frobenius_gap(real, generated[idps].to_numpy(float)), 4),
            "dependence_noise_floor": round(dependence_noise_floor(truth, holdout, idps, seed), 4),
            "dependence_gap_pom": round(M.frobenius_gap(real, pom[idps].to_numpy(float)), 4),
            "nn_ratio": round(memo["ratio"], 3), "suite_s": round(ace_s + time.perf_counter() - start, 1)}


def with_missing(train, idps: list[str], share: float, seed: int, drop_incomplete: bool, mechanism: str = "mcar"):
    """``train`` with a share ``share`` of its IDP values removed (and, with ``drop_incomplete``, the rows left
    incomplete dropped). ``mechanism``: ``mcar``, completely at random; ``previous-idp``, IDP j (j > 0) missing with a
    probability that rises with IDP j-1's value (logistic in its rank score, slope 2: at a 10% share about 40% of
    the top decile goes against 0.2% of the bottom one; IDP 0 stays complete, the others average ``share``): missing
    at random given the observed values, which complete-case fitting is biased by; ``own-value``, every IDP missing
    with the same rising probability in its own value (missing not at random: e.g. the largest lesion loads failing
    segmentation), which no fit of the observed values alone can undo."""
    if share <= 0:
        return train
    values = train[idps].to_numpy(float).copy()
    rng = np.random.default_rng(seed + 555)
    if mechanism == "mcar":
        drop = rng.random(values.shape) < share
    else:
        ranks = special.ndtri((stats.rankdata(values, axis=0) - 0.5) / len(values))
        if mechanism == "previous-idp":
            ranks = ranks[:, :-1]
        logit = np.log(share / (1 - share))
        odds = 1 / (1 + np.exp(-(logit + 2 * ranks)))
        odds *= share / odds.mean(axis=0)  # each column's average share exactly
        drop = rng.random(odds.shape) < odds
        if mechanism == "previous-idp":
            drop = np.column_stack([np.zeros(len(values), bool), drop])
    values[drop] = np.nan
    out = train.copy()
    out[idps] = values
    return out.dropna(subset=idps) if drop_incomplete else out


def run(name: str, d: int, seed: int, samples: int, overrides: dict, vary: list[tuple[str, list]],
        holdout_n: int = 2000, n_train: int = 5000, suite: bool = False, sites: int = 0, missing: float = 0.0,
        drop_incomplete: bool = False, mechanism: str = "mcar") -> list[dict]:
    train, holdout, idps, covs, truth = split(name, d, seed, holdout_n, n_train, sites)
    fitted_on = with_missing(train, idps, missing, seed, drop_incomplete, mechanism)
    model = build(overrides, seed)
    start = time.perf_counter()
    model.fit(fitted_on, age="age", covariates=covs, idps=idps)
    fit_s = time.perf_counter() - start
    rows = []
    for values in itertools.product(*(v for _, v in vary)):
        setting = dict(zip((k for k, _ in vary), values, strict=True))
        model.set_params(**setting)
        rows.append(score_row(model, name, d, train, holdout, idps, truth, fit_s, seed, samples,
                              {**overrides, **setting}))
        if missing > 0:
            rows[-1].update(missing=missing, missing_mechanism=mechanism, drop_incomplete=drop_incomplete,
                            rows_fitted=len(fitted_on), imputation_s=getattr(model, "history_", {}).get("imputation_s"))
    if suite and truth is not None:
        rows[-1].update(suite_metrics(model, train, holdout, idps, truth, seed))
    return rows


def multivariate_shares(model, scores, d: int) -> dict:
    """Shares of held-out rows above the 95th / 99th centile of the multivariate z as scored (``mv_above_*``) and
    of chi2(D) under the model (``mv_chi2_above_*``), the validation rows it was calibrated on (None: chi2) and
    the calibration's seconds within the fit."""
    d2 = scores["multivariate_d2"].to_numpy(float)
    mz = scores["multivariate_z"].to_numpy(float)
    ok = np.isfinite(d2) & np.isfinite(mz) & scores.filter(like="z:").notna().all(axis=1).to_numpy()  # all D IDPs
    if not ok.any():
        return {}
    chi = stats.chi2.sf(d2[ok], d)
    calibration = getattr(model, "multivariate_calibration_", None)
    seconds = (getattr(model, "history_", {}) or {}).get("multivariate_calibration_s")
    return {"mv_above_95": round(float(np.mean(mz[ok] > special.ndtri(0.95))), 4),
            "mv_above_99": round(float(np.mean(mz[ok] > special.ndtri(0.99))), 4),
            "mv_chi2_above_95": round(float(np.mean(chi < 0.05)), 4),
            "mv_chi2_above_99": round(float(np.mean(chi < 0.01)), 4),
            "mv_calibrated_on": calibration.n_rows if calibration is not None else None,
            "mv_calibration_s": round(seconds, 1) if seconds is not None else None}


def score_row(model, name, d, train, holdout, idps, truth, fit_s, seed, samples, overrides) -> dict:
    start = time.perf_counter()
    scores = model.score(holdout, n_samples=samples, seed=seed)
    score_s = time.perf_counter() - start
    cov, ks = [], []
    for c in idps:
        u = scores[f"centile:{c}"].dropna().to_numpy()
        cov.append(np.mean((u > 0.025) & (u < 0.975)))
        ks.append(stats.kstest(u, "uniform").pvalue)
    h = getattr(model, "history_", {}) or {}
    points = None
    if hasattr(model, "_score_points"):
        points = len(model._score_points(*model._covariates_of(holdout, "table"))[0])
    marginal = getattr(getattr(model, "net_", None), "marginal", None)
    label = name if truth is None else f"synthetic D={d}" + (f", {truth.n_sites} sites" if truth.n_sites else "")
    row = {"data": label, "seed": seed, "n_train": len(train), "n_holdout": len(holdout),
           "idps": len(idps), "params": overrides, "samples": samples, "fit_s": round(fit_s, 1),
           "planned_steps": h.get("planned_steps"), "best_step": h.get("best_step"), "kept_step": h.get("kept_step"),
           "loss_kept_step": h.get("loss_kept_step"), "val_crps_p": h.get("val_crps_p"),
           "step0_choice_s": round(h["step0_choice_s"], 2) if h.get("step0_choice_s") is not None else None,
           "stop_step": h.get("steps"), "marginal_width": int(marginal.idp.shape[1]) if marginal is not None else None,
           "score_s": round(score_s, 1), "score_points": points,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "coverage95": round(float(np.mean(cov)), 4),
           "pit_ks_pass": round(float(np.mean(np.asarray(ks) > 0.01)), 3),
           **multivariate_shares(model, scores, len(idps))}
    if truth is not None:
        row.update(truth_errors(scores, holdout, idps, truth))
    return row


def truth_errors(scores, holdout, idps: list[str], truth) -> dict:
    """Median |z error| against the exact truth's z and mean |centile error| of the scored held-out rows."""
    site = holdout["site"].to_numpy() if truth.n_sites else None
    u_true = np.column_stack([truth.cdf(holdout[c].to_numpy(), holdout["age"].to_numpy(),
                                        holdout["sex"].to_numpy(), c, site=site) for c in idps])
    u_model = scores[[f"centile:{c}" for c in idps]].to_numpy()
    z_err = np.abs(special.ndtri(np.clip(u_true, 1e-12, 1 - 1e-12)) - scores[[f"z:{c}" for c in idps]].to_numpy())
    return {"median_abs_z_error": round(float(np.median(z_err)), 4),
            "mean_abs_centile_error": round(float(np.mean(np.abs(u_true - u_model))), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fcon1000,synthetic")
    ap.add_argument("--d", type=int, default=10, help="IDPs of the synthetic truth")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--holdout", type=int, default=2000, help="fresh held-out controls of the synthetic truth")
    ap.add_argument("--n-train", type=int, default=5000, help="training controls of the synthetic truth")
    ap.add_argument("--sites", type=int, default=0,
                    help="sites of the synthetic truth (covariate site: a location and scale effect per site)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", default=str(HERE.parent), help="checkout whose normcore is imported")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model parameter")
    ap.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                    help="score the fitted model once per value of a scoring parameter (e.g. sampling_steps=10,25); "
                         "repeated: once per combination")
    ap.add_argument("--suite", action="store_true",
                    help="synthetic truth: also curve ACE, dependence gap with its noise floor, memorisation ratio")
    ap.add_argument("--missing", type=float, default=0.0,
                    help="share of the training IDP values removed completely at random before the fit")
    ap.add_argument("--missing-mechanism", choices=("mcar", "previous-idp", "own-value"), default="mcar",
                    help="which values --missing removes (see with_missing)")
    ap.add_argument("--drop-incomplete", action="store_true",
                    help="with --missing: drop the training rows left incomplete (complete-case fitting)")
    ap.add_argument("--out", default=None, help="append the rows to this JSON-lines file")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(Path(args.root).resolve()))
    import normcore  # noqa: F401  (cached now: benchmarks/compare.py's own path insertion cannot override it)
    torch.set_num_threads(args.threads)
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    vary = [(key, [parse_value(v) for v in values.split(",")])
            for key, values in (text.split("=", 1) for text in args.vary)]
    for name in args.data.split(","):
        for row in run(name, args.d, args.seed, args.samples, overrides, vary, args.holdout, args.n_train,
                       args.suite, args.sites, args.missing, args.drop_incomplete, args.missing_mechanism):
            row = {"root": args.root, **row}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
