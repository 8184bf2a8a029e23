"""Scores in the layout PCNtoolkit (1.x) writes after ``predict``, for its users' scripts and notebooks.

PCNtoolkit's ``NormData.save_results(save_dir)`` writes, for a data set named NAME:

- ``Z_NAME.csv``: index column ``observations`` (row labels as text), then ``subject_ids``, then one column
  per response variable (IDP) in sorted order: the deviation z;
- ``centiles_NAME.csv``: index columns ``observations`` and ``centile`` (one row per observation and
  centile level; PCNtoolkit's default levels 0.05, 0.25, 0.5, 0.75, 0.95), then ``subject_ids`` and the
  IDPs: the predictive centiles in the IDPs' own units at each subject's covariates;
- ``statistics_NAME.csv``: index column ``statistic`` (Rho, Rho_p, R2, RMSE, SMSE, MSLL, MLL, ShapiroW,
  MACE, MAPE, EXPV), one column per IDP.

:func:`write_pcntoolkit_results` writes the same three files from a normcore model, so that
``NormData.load_results`` (or ``pd.read_csv`` as its tutorials do) reads them. The mapping: Z is normcore's
``z:<IDP>``; Yhat (for Rho, R2, RMSE, SMSE, MAPE, EXPV) is the predictive mean; MLL and MSLL use a Gaussian
with the model's predictive mean and variance (normcore models have no closed-form density; PCNtoolkit's
convention, which ``normcore evaluate`` reports as ``msll_gaussian``; its ``msll`` scores IDPs with point masses
under their mixture instead), MSLL against a Gaussian with the scored data's own mean and variance;
MACE is PCNtoolkit's: per combination of categorical covariates, the mean absolute difference between each
centile level and the share of subjects at or below that centile, averaged over the combinations.
``logp_NAME.csv`` is not written (no closed-form log density). IDPs with missing values are evaluated on the
rows that have them.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from normcore._utils.atomic import write_atomic
from normcore._utils.errors import InputError, column_not_found
from normcore._utils.progress import Progress
from normcore.tabular.io import escape_formulas

PCN_CENTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
STATISTICS = ("Rho", "Rho_p", "R2", "RMSE", "SMSE", "MSLL", "MLL", "ShapiroW", "MACE", "MAPE", "EXPV")


def pcntoolkit_tables(model, df: pd.DataFrame, scores: pd.DataFrame, id_col: str | None = None,
                      n_samples: int | None = None, seed: int | None = None,
                      progress: Progress | None = None) -> dict[str, pd.DataFrame]:
    """The Z, centiles and statistics tables (keys ``Z``, ``centiles``, ``statistics``) in PCNtoolkit's layout;
    ``progress`` hears of (and may cancel) the model's sampling."""
    if id_col and id_col not in df.columns:
        raise column_not_found("table", "subject ID", id_col, df.columns)
    idps = sorted(c for c in model.idps_ if f"z:{c}" in scores.columns)
    if not idps:
        raise InputError("the scores hold no z: column of the model's IDPs")
    n = len(df)
    obs = pd.Index([str(i) for i in range(n)], name="observations")
    subjects = df[id_col].astype(str).to_numpy() if id_col else obs.to_numpy()
    z = pd.DataFrame({"subject_ids": subjects, **{c: scores[f"z:{c}"].to_numpy(float) for c in idps}}, index=obs)

    order = [model.idps_.index(c) for c in idps]
    q = np.asarray(PCN_CENTILES)
    quant, mean, var = model.predict_quantiles_and_moments(df, PCN_CENTILES, n_samples=n_samples, seed=seed,
                                                           progress=progress)
    quant, mean, var = quant[:, :, order], mean[:, order], var[:, order]  # (Q, n, D), (n, D)
    rows = pd.MultiIndex.from_product([obs, [str(c) for c in q]], names=["observations", "centile"])
    centiles = pd.DataFrame({"subject_ids": np.repeat(subjects, len(q)),
                             **{c: quant[:, :, j].T.reshape(-1) for j, c in enumerate(idps)}}, index=rows)

    y = df[idps].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    groups = _covariate_groups(model, df)
    stats_table = pd.DataFrame(index=pd.Index(STATISTICS, name="statistic"), columns=idps, dtype=float)
    for j, name in enumerate(idps):
        ok = np.isfinite(y[:, j])
        stats_table[name] = _statistics(y[ok, j], mean[ok, j], var[ok, j], z[name].to_numpy()[ok],
                                        quant[:, ok, j], q, groups[ok])
    return {"Z": z, "centiles": centiles, "statistics": stats_table}


def pcntoolkit_csv_texts(tables: dict[str, pd.DataFrame], name: str = "test") -> dict[str, str]:
    """The three files' names and CSV texts as PCNtoolkit writes them (formula-like cells escaped)."""
    return {f"{key}_{name}.csv": escape_formulas(tables[key]).to_csv() for key in ("Z", "centiles", "statistics")}


def pcntoolkit_zip_bytes(tables: dict[str, pd.DataFrame], name: str = "test") -> bytes:
    """The three files in one zip archive (a download: unzip into the folder PCNtoolkit's load_results reads)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for file_name, text in pcntoolkit_csv_texts(tables, name).items():
            archive.writestr(file_name, text)
    return buf.getvalue()


def write_pcntoolkit_results(tables: dict[str, pd.DataFrame], out_dir: str | Path, name: str = "test") -> list[Path]:
    """Write the tables as ``Z_NAME.csv``, ``centiles_NAME.csv``, ``statistics_NAME.csv`` (atomically each)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; name a folder for the PCNtoolkit tables")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for file_name, text in pcntoolkit_csv_texts(tables, name).items():  # subject IDs are user text: escaped
        paths.append(write_atomic(out / file_name, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8")))
    return paths


def _covariate_groups(model, df: pd.DataFrame) -> np.ndarray:
    """One label per row for each combination of the model's categorical covariates (PCNtoolkit's batches)."""
    if not model.covariates_:
        return np.zeros(len(df), int)
    keys = df[model.covariates_].astype(str).agg("|".join, axis=1)
    return pd.factorize(keys)[0]


def _statistics(y, mean, var, z, quant, levels, groups) -> list[float]:
    if len(y) < 3:
        return [np.nan] * len(STATISTICS)
    resid = y - mean
    mse = float(np.mean(resid**2))
    var_y = float(np.var(y))
    rho, rho_p = stats.pearsonr(y, mean) if np.std(mean) > 0 else (np.nan, np.nan)
    r2 = 1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2) if var_y > 0 else np.nan
    var = np.maximum(var, 1e-12)
    logp = -0.5 * np.log(2 * np.pi * var) - resid**2 / (2 * var)
    base_logp = -0.5 * np.log(2 * np.pi * var_y) - (y - y.mean()) ** 2 / (2 * var_y) if var_y > 0 else logp * np.nan
    mll = float(-np.mean(logp))
    msll = mll - float(-np.mean(base_logp))
    zf = z[np.isfinite(z)]
    shapiro = float(stats.shapiro(zf).statistic) if len(zf) >= 3 else np.nan
    mace = float(np.mean([np.abs(levels - (quant[:, groups == g] >= y[groups == g]).mean(axis=1)).mean()
                          for g in np.unique(groups)]))
    mape = float(np.mean(np.abs(resid) / np.maximum(np.abs(y), np.finfo(float).eps)))
    expv = 1 - np.var(resid) / var_y if var_y > 0 else np.nan
    return [float(rho), float(rho_p), float(r2), float(np.sqrt(mse)), mse / var_y if var_y else 0.0, msll, mll,
            shapiro, mace, mape, float(expv)]
