"""The evaluation suite: every metric of :mod:`normcore.metrics` for one model on held-out data."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from scipy import special

from normcore import metrics as M
from normcore._utils.progress import Progress, as_progress
from normcore.tabular.predictive_mixture import PredictiveMixture
from normcore.tabular.synthetic import SyntheticTruth

MOMENT_SAMPLES = 200  # samples per scoring point for the predictive moments (EXPV, SMSE, MSLL)
SHARE_FLOOR = 0.5 / MOMENT_SAMPLES  # the smallest probability MSLL gives a floor or a ceiling (half a sample)
MIN_BODY_SAMPLES = 20  # a sampled body's moments resting on fewer samples give way to the training body's


def _bands(ages: np.ndarray, n_bands: int = 4) -> list[tuple[float, float]]:
    edges = np.unique(np.quantile(ages, np.linspace(0, 1, n_bands + 1)).round(1))
    edges[-1] += 0.1
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=False)]


def evaluate(model, holdout: pd.DataFrame, truth: SyntheticTruth | None = None, group_col: str | None = None,
             control_value: str | None = None, train: pd.DataFrame | None = None, n_samples: int | None = None,
             seed: int = 0, progress: Progress | None = None, scores: pd.DataFrame | None = None) -> dict:
    """Calibration (per IDP, and of the multivariate score), classic, dependence, memorisation and clinical metrics
    of ``model`` on ``holdout``.

    Controls are the rows with ``group_col == control_value`` (all rows without a group column);
    patients, when present, give the clinical-separation table. ``truth`` (synthetic data) adds the
    ACE of centile curves against the exact truth; ``train`` adds the memorisation check.

    ``progress`` hears of (and may cancel) the sampling, in the stages "scoring", "predictive moments" and
    "samples for the dependence checks". ``scores``: ``model.score(holdout, n_samples=n_samples, seed=seed)`` when
    the caller already has it (one row per row of ``holdout``, in its order); it is then not scored again and
    ``score_time_s`` is None.
    """
    progress = as_progress(progress)
    age = model.encoder_.age
    idps = model.idps
    cats = model.encoder_.categorical
    report: dict = {"model": getattr(model, "backbone", type(model).__name__), "n_holdout": int(len(holdout)),
                    "idps": idps}
    if group_col:
        is_control = holdout[group_col].astype(str) == str(control_value)
    else:
        is_control = pd.Series(True, index=holdout.index)
    if scores is None:
        start = time.perf_counter()
        scores = model.score(holdout, n_samples=n_samples, seed=seed, progress=progress.as_stage("scoring"))
        report["score_time_s"] = time.perf_counter() - start
    elif len(scores) != len(holdout):
        raise ValueError(f"scores has {len(scores)} rows for a held-out table of {len(holdout)}")
    else:
        report["score_time_s"] = None
    ctrl = scores[is_control.to_numpy()]
    report["n_controls"] = int(len(ctrl))

    per_idp = []
    mixture = model.predict_mixture(holdout[is_control.to_numpy()], n_samples=MOMENT_SAMPLES,
                                    progress=progress.as_stage("predictive moments"))
    mean, var = mixture.mean, mixture.var
    tr = model.training_summary_
    for j, name in enumerate(idps):
        u = ctrl[f"centile:{name}"].to_numpy(float)
        y = ctrl[name].to_numpy(float)
        seen = ~np.isnan(y)  # the regression metrics use the rows where the IDP is observed
        y, mu, sd2 = y[seen], mean[seen, j], np.maximum(var[seen, j], 1e-12)
        ks_stat, ks_p = M.pit_ks(u)
        cov = M.coverage(u).set_index("level")
        row = {"idp": name, "pit_ks": ks_stat, "pit_ks_p": ks_p,
               "coverage50": cov.loc[0.5, "coverage"], "coverage90": cov.loc[0.9, "coverage"],
               "coverage95": cov.loc[0.95, "coverage"], "coverage95_se": cov.loc[0.95, "se"],
               "ace_heldout": M.ace_from_centiles(u, ctrl[age].to_numpy(float)),
               "expv": M.explained_variance(y, mu), "smse": M.smse(y, mu), "rho": M.pearson_rho(y, mu)}
        train_mean = tr.get("idp_mean", {}).get(name, float(np.mean(y)))
        train_sd = tr.get("idp_std", {}).get(name, float(np.std(y)))
        row["msll_gaussian"] = M.msll(y, mu, sd2, train_mean, train_sd**2)
        trivial = training_mixture(model, name)
        row["msll"] = row["msll_gaussian"] if trivial is None else point_mass_msll(y, mixture, j, seen, trivial)
        row.update(M.z_summary(ctrl[f"z:{name}"].to_numpy(float)))
        per_idp.append(row)
    table = pd.DataFrame(per_idp)
    report["per_idp"] = table.to_dict(orient="records")
    report["aggregate"] = {
        "coverage50_mean": float(table.coverage50.mean()), "coverage90_mean": float(table.coverage90.mean()),
        "coverage95_mean": float(table.coverage95.mean()), "ace_heldout_mean": float(table.ace_heldout.mean()),
        "pit_ks_pass_rate_0.01": float((table.pit_ks_p > 0.01).mean()),
        "pit_ks_pass_rate_0.01_bh": float((~M.benjamini_hochberg(table.pit_ks_p.to_numpy(), 0.01)).mean()),
        "msll_mean": float(table.msll.mean()), "msll_gaussian_mean": float(table.msll_gaussian.mean()),
        "expv_mean": float(table.expv.mean()),
        "smse_mean": float(table.smse.mean())}

    report["multivariate"] = multivariate_calibration(ctrl)
    calibration = getattr(model, "multivariate_calibration_", None)
    if report["multivariate"]["n"]:  # which reference its z has: chi2 under the model, or the fit's calibration
        report["multivariate"]["calibrated_on"] = calibration.n_rows if calibration is not None else None
        report["multivariate"]["calibrated_rows"] = calibration.rows_text() if calibration is not None else None

    controls = holdout[is_control.to_numpy()].reset_index(drop=True)
    generated = model.sample(controls[[age, *cats]], n=1, seed=seed + 1,
                             progress=progress.as_stage("samples for the dependence checks"))
    bands = _bands(controls[age].to_numpy(float))
    report["dependence"] = M.dependence_report(controls, generated, age, idps, bands, seed=seed)
    ks = M.ks_by_age_band(controls, generated, age, idps, bands)
    report["ks_by_age_band"] = {"n_tests": int(len(ks)), "rejected_bh": int(ks["reject_bh"].sum()),
                                "share_rejected": float(ks["reject_bh"].mean()) if len(ks) else float("nan")}

    if train is not None:
        report["memorisation"] = memorisation_check(model, generated, train, controls)

    if truth is not None:
        report["truth"] = ace_against_synthetic_truth(model, truth, age_range=(20.0, 90.0))
        report["dependence"]["frobenius_oracle"] = dependence_noise_floor(truth, controls, idps, seed)

    if group_col and (~is_control).any():
        table = M.separation_table(scores, idps, ~is_control.to_numpy(), n_boot=500, seed=seed)
        report["clinical"] = table.to_dict(orient="records")
    return report


def training_mixture(model, name: str) -> tuple[float, float, float, float] | None:
    """(floor share, ceiling share, body mean, body variance) of IDP ``name``'s training values, where the model
    sets a point mass apart (``model.point_masses_``): the training shares at its bounds with the training mean and
    SD (``training_summary_``; ddof 1, over the fit's rows) give the mean and the (maximum-likelihood, ddof 0)
    variance of the values between the bounds exactly; None for an IDP without point masses (or a body whose
    variance does not come out positive)."""
    masses = {kind: (value, share) for idp, kind, value, share in model.point_masses_ if idp == name}
    if not masses:
        return None
    floor, p_floor = masses.get("floor", (0.0, 0.0))
    ceiling, p_ceiling = masses.get("ceiling", (0.0, 0.0))
    summary = model.training_summary_
    n = summary.get("n_train", 0) + summary.get("n_validation", 0)
    mean, sd = summary.get("idp_mean", {}).get(name), summary.get("idp_std", {}).get(name)
    p_body = 1.0 - p_floor - p_ceiling
    if mean is None or sd is None or n < 2 or p_body <= 0:
        return None
    second = sd**2 * (n - 1) / n + mean**2  # the mean square of all training values
    body_mean = (mean - p_floor * floor - p_ceiling * ceiling) / p_body
    body_var = (second - p_floor * floor**2 - p_ceiling * ceiling**2) / p_body - body_mean**2
    return (p_floor, p_ceiling, body_mean, body_var) if body_var > 0 else None


def point_mass_msll(y: np.ndarray, mixture: PredictiveMixture, j: int, rows: np.ndarray,
                    trivial: tuple[float, float, float, float]) -> float:
    """MSLL of the values ``y`` of IDP ``j`` (the ``rows`` of ``mixture``) under the model's mixture of its floor,
    its ceiling and a Gaussian body (:func:`normcore.metrics.point_mass_log_loss`), less that under the training
    values' mixture ``trivial`` (:func:`training_mixture`).

    Shares are kept within (``SHARE_FLOOR``, 1 - ``SHARE_FLOOR``), the resolution of :data:`MOMENT_SAMPLES` samples
    (a sampled share of 0 or 1 is not a certainty), and a body whose moments rest on fewer than
    :data:`MIN_BODY_SAMPLES` of them takes the training body's: its log loss then compares the shares alone."""
    floor, ceiling = mixture.floor[j], mixture.ceiling[j]
    p_floor, p_ceiling = mixture.floor_share[rows, j], mixture.ceiling_share[rows, j]
    body_mean, body_var = mixture.body_mean[rows, j], mixture.body_var[rows, j]
    unreliable = body_var <= 0
    if mixture.body_samples is not None:
        unreliable |= mixture.body_samples[rows, j] < MIN_BODY_SAMPLES
    body_mean, body_var = np.where(unreliable, trivial[2], body_mean), np.where(unreliable, trivial[3], body_var)

    def loss(p_lo, p_hi, centre, spread):
        p_lo, p_hi = _bounded_shares(p_lo, p_hi, floor, ceiling)
        return M.point_mass_log_loss(y, floor, ceiling, p_lo, p_hi, centre, spread)
    return float(np.mean(loss(p_floor, p_ceiling, body_mean, body_var) - loss(*trivial)))


def _bounded_shares(p_floor, p_ceiling, floor: float, ceiling: float) -> tuple[np.ndarray, np.ndarray]:
    """Shares at a floor and a ceiling (0 where there is none) kept within (``SHARE_FLOOR``, 1 - ``SHARE_FLOOR``),
    scaled down together where they would leave the body less than ``SHARE_FLOOR``."""
    p_floor = np.clip(p_floor, SHARE_FLOOR, 1 - SHARE_FLOOR) if not np.isnan(floor) else np.zeros_like(p_floor)
    p_ceiling = np.clip(p_ceiling, SHARE_FLOOR, 1 - SHARE_FLOOR) if not np.isnan(ceiling) else np.zeros_like(p_ceiling)
    total = p_floor + p_ceiling
    scale = np.where(total > 1 - SHARE_FLOOR, (1 - SHARE_FLOOR) / np.maximum(total, SHARE_FLOOR), 1.0)
    return p_floor * scale, p_ceiling * scale


def memorisation_check(model, generated: pd.DataFrame, train: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """:func:`normcore.metrics.memorisation_report` of ``generated`` rows against the training rows and unseen
    ``reference`` rows, each as age, the model's covariate codes and its IDPs. Distances need every coordinate, so
    the complete rows of ``train`` and ``reference`` take part (their counts: ``n_train_rows``, ``n_reference_rows``);
    with fewer than two of either the report holds the counts alone."""
    def as_matrix(frame: pd.DataFrame) -> np.ndarray:
        frame = frame.dropna(subset=[model.encoder_.age, *model.encoder_.categorical, *model.idps])
        codes = model.encoder_.codes(frame, allow_unseen=True).astype(float)
        return np.column_stack([frame[model.encoder_.age].to_numpy(float), codes, frame[model.idps].to_numpy(float)])
    t, r = as_matrix(train), as_matrix(reference)
    counts = {"n_train_rows": int(len(t)), "n_reference_rows": int(len(r))}
    if min(len(t), len(r)) < 2:
        return counts
    return {**M.memorisation_report(as_matrix(generated), t, r), **counts}


def dependence_noise_floor(truth: SyntheticTruth, real: pd.DataFrame, idps: list[str], seed: int = 0) -> float:
    """Sampling-noise floor of the dependence error: the Spearman RMS gap between ``real`` and an independent draw
    of the same size from the truth (at the truth's own covariates, so it is conservative)."""
    oracle = truth.sample(len(real), seed=seed + 99)
    return M.frobenius_gap(real[idps].to_numpy(float), oracle[idps].to_numpy(float))


def ace_against_synthetic_truth(model, truth: SyntheticTruth, age_range: tuple[float, float] = (20.0, 90.0),
                                step: float = 2.0, n_samples: int = 2000, all_sites: bool = False) -> dict:
    """ACE of the model's centile curves against the exact truth: ages in ``age_range``, both sexes,
    quantiles 0.02..0.98 (25 levels), at the first site when the truth has sites (``all_sites``: at every site,
    averaged; ``ace_per_site`` then holds each site's)."""
    ages = np.arange(age_range[0], age_range[1] + 1e-9, step)
    qs = np.linspace(0.02, 0.98, 25)
    with_sites = truth.n_sites and "site" in model.encoder_.categorical
    sites = (truth.site_names if all_sites else truth.site_names[:1]) if with_sites else [None]
    errs, per_site = {}, {}
    for site in sites:
        fixed_site = {"site": site} if site is not None else {}
        site_errs = []
        for sex in (0, 1):
            cur = model.centiles(ages, tuple(qs), fixed={"sex": sex, **fixed_site}, n_samples=n_samples)
            for name in model.idps:
                c = cur[cur.idp == name]
                p = truth.cdf(c["value"].to_numpy(), c["age"].to_numpy(), sex, name, site=site)
                err = M.ace_against_truth(c["quantile"].to_numpy(), p)
                errs.setdefault(name, []).append(err)
                site_errs.append(err)
        per_site[site] = float(np.mean(site_errs))
    per_idp = {k: float(np.mean(v)) for k, v in errs.items()}
    out = {"ace": float(np.mean(list(per_idp.values()))), "ace_per_idp": per_idp}
    if all_sites and with_sites:
        out["ace_per_site"] = per_site
    return out


def multivariate_calibration(scores: pd.DataFrame) -> dict:
    """How healthy controls sit on the multivariate score: the shares above the 95th and 99th centiles of its z
    scale (nominal 0.05 and 0.01), its median z (nominal 0) and the KS p-value of its centiles against uniform;
    ``n`` 0 where no multivariate score was computed."""
    mz = scores["multivariate_z"].to_numpy(float) if "multivariate_z" in scores else np.full(len(scores), np.nan)
    mz = mz[np.isfinite(mz)]
    if not mz.size:
        return {"n": 0}
    return {"n": int(mz.size), "share_above_95": float((mz > special.ndtri(0.95)).mean()),
            "share_above_99": float((mz > special.ndtri(0.99)).mean()), "median_z": float(np.median(mz)),
            "pit_ks_p": float(M.pit_ks(special.ndtr(mz))[1])}


def _gaussian_msll(aggregate: dict) -> str:
    """The Gaussian MSLL beside the mixture's, where IDPs with point masses make them differ."""
    gaussian = aggregate.get("msll_gaussian_mean")
    if gaussian is None or gaussian == aggregate["msll_mean"]:
        return ""
    return f" (point masses scored as such; Gaussian, as PCNtoolkit: {gaussian:.4g})"


def summary_lines(report: dict) -> list[str]:
    """Human-readable summary of an evaluation report."""
    agg = report["aggregate"]
    timed = f", scored in {report['score_time_s']:.1f} s" if report.get("score_time_s") is not None else ""
    lines = [f"model {report['model']}: {report['n_controls']} held-out controls, {len(report['idps'])} IDPs{timed}",
             f"  coverage 50/90/95%: {agg['coverage50_mean']:.3f} / {agg['coverage90_mean']:.3f} / "
             f"{agg['coverage95_mean']:.3f}",
             f"  held-out ACE {agg['ace_heldout_mean']:.4f}; PIT KS pass rate (alpha 0.01) "
             f"{agg['pit_ks_pass_rate_0.01']:.2f}",
             f"  MSLL {agg['msll_mean']:.3f}{_gaussian_msll(agg)}, EXPV {agg['expv_mean']:.3f}, "
             f"SMSE {agg['smse_mean']:.3f}"]
    mv = report.get("multivariate", {})
    if mv.get("n"):
        lines.append(f"  multivariate score: {mv['share_above_95']:.3f} / {mv['share_above_99']:.3f} of controls above "
                     f"its 95th / 99th centile (nominal 0.05 / 0.01), median z {mv['median_z']:.2f}; "
                     + (f"z calibrated on {mv['calibrated_rows']}" if mv.get("calibrated_rows")
                        else "z from chi-square under the model"))
    dep = report["dependence"]
    floor = f" (noise floor, exact draw: {dep['frobenius_oracle']:.4f})" if "frobenius_oracle" in dep else ""
    lines.append(f"  dependence (Spearman RMS gap): model {dep['frobenius_model']:.4f} vs product of marginals "
                 f"{dep['frobenius_product_of_marginals']:.4f}{floor}")
    if "memorisation" in report:
        mem = report["memorisation"]
        lines.append(f"  memorisation: NN distance ratio train/holdout {mem['ratio']:.3f}, "
                     f"share closer to train {mem['share_closer_to_train']:.3f}")
    if "truth" in report:
        lines.append(f"  ACE against the exact truth: {report['truth']['ace']:.4f}")
    if "clinical" in report:
        best = max(report["clinical"], key=lambda r: r["auc"])
        mv = [r for r in report["clinical"] if r["score"] in ("multivariate_d2", "mean_abs_z")]
        lines.append("  clinical AUC: " + ", ".join(f"{r['score']} {r['auc']:.3f}" for r in mv)
                     + f"; best {best['score']} {best['auc']:.3f}")
    return lines
