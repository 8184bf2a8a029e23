"""The content of a per-subject deviation report, independent of how it is rendered (HTML or PDF).

Built from a row of a score table (``normcore score`` output: the subject's input columns, then ``z:`` and
``centile:`` columns) and the model that scored it. Centiles are coloured by band
(:mod:`normcore.plotting.centile_bands`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special

from normcore._utils.errors import InputError, column_not_found
from normcore.plotting.centile_bands import centile_band
from normcore.tabular.anatomy import group_order
from normcore.tabular.point_masses import at_shared_masses

if TYPE_CHECKING:
    from normcore.reports.mri import MriFindings

DISCLAIMER = ("Research use only; not a diagnostic device. Centiles compare each person with the model's healthy "
              "reference cohort and depend on how similar the acquisition and processing were.")
N_TOP = 10
N_CURVES = 4
CURVE_AGES = 8  # ages on the curve panels' grid, plus the subject's own (lines join them; BENCHMARKS.md: report time)
CURVE_SAMPLES = 1000  # samples per age for the curve panels and expected ranges (all IDPs are drawn at once)


@dataclass
class SubjectReport:
    """Everything a subject report shows, as plain data."""

    subject: str
    header: dict[str, str]
    profile: pd.DataFrame  # idp, group, value, z, centile, band (grouped, sorted by z within a group)
    top: pd.DataFrame  # the most deviant IDPs: idp, value, centile, z, expected_5th, expected_95th
    curves: pd.DataFrame  # centile curves (long format) of the top IDPs at the subject's covariates
    age: float
    multivariate: dict[str, float]
    flags: list[str] = field(default_factory=list)
    disclaimer: str = DISCLAIMER
    mri: MriFindings | None = None  # the subject's scored MRI scan, when there is one

    @property
    def has_idps(self) -> bool:
        """Whether the report has a tabular part (an MRI-only report has none)."""
        return len(self.profile) > 0


def subject_report(model, scores: pd.DataFrame, subject: str, id_col: str | None = None,
                   n_top: int = N_TOP, n_curves: int = N_CURVES, n_samples: int | None = None,
                   seed: int | None = 0, mri: MriFindings | None = None) -> SubjectReport:
    """The report content of ``subject`` (a value of ``id_col``, or a row number without it) in ``scores``,
    with the subject's MRI findings (:mod:`normcore.reports.mri`) when given."""
    if id_col:
        if id_col not in scores.columns:
            raise column_not_found("the scores", "subject ID", id_col, scores.columns)
        rows = scores.index[scores[id_col].astype(str) == str(subject)]
        if not len(rows):
            raise InputError(f"no subject {subject!r} in column {id_col!r}")
        row = scores.loc[rows[0]]
    else:
        try:
            row = scores.iloc[int(subject)]
        except (ValueError, IndexError):
            raise InputError(f"subject {subject!r}: without --id-col give a row number 0-{len(scores) - 1}") from None
    idps = [c for c in model.idps_ if f"z:{c}" in scores.columns]
    if not idps:
        raise InputError("the scores hold no z: column of the model's IDPs (is this the output of `score`?)")
    age = float(row[model.age_])
    frame = pd.DataFrame({"idp": idps, "value": [float(row[c]) if c in row else np.nan for c in idps],
                          "z": [float(row[f"z:{c}"]) for c in idps],
                          "centile": [float(row[f"centile:{c}"]) for c in idps]})
    frame["band"] = frame.centile.map(centile_band)
    order = {name: g for g, names in group_order(idps) for name in names}
    frame["group"] = frame.idp.map(order)
    rank = {g: i for i, (g, _) in enumerate(group_order(idps))}
    profile = frame.assign(_g=frame.group.map(rank)).sort_values(["_g", "z"], kind="stable").drop(columns="_g")

    covariates = {c: str(row[c]) for c in model.covariates_}
    measured = frame[frame.z.notna()]  # an IDP without a value is no deviation: named in the flags instead
    if measured.empty:
        raise InputError(f"subject {subject!r} has no scored IDP value to report")
    shared = at_shared_masses(measured.value.to_numpy(float)[None, :], list(measured.idp), model.point_masses_)[0]
    share_of = {(idp, value): share for idp, _, value, share in model.point_masses_}
    at_shared = [(c, v, share_of[c, v]) for c, v, at in zip(measured.idp, measured.value, shared, strict=True) if at]
    rankable = measured[~measured.idp.isin([c for c, _, _ in at_shared])]
    rankable = measured if rankable.empty else rankable
    top = rankable.reindex(rankable.z.abs().sort_values(ascending=False).index).head(n_top).reset_index(drop=True)
    # One sampling pass serves the expected ranges and the curve panels: the subject's age is one of the curve
    # ages (the curves pass through it), and the model draws all IDPs at every age at once anyway.
    fixed = {c: v for c, v in covariates.items() if v in model.levels_[c]}
    lo, hi = model.age_range_
    grid = np.unique(np.append(np.linspace(min(lo, age), max(hi, age), CURVE_AGES), age))
    curves = model.centiles(grid, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95), fixed=fixed,
                            n_samples=n_samples or CURVE_SAMPLES, idps=list(top.idp), seed=seed)
    at_age = curves[curves.age == age].set_index(["idp", "quantile"]).value
    top["expected_5th"] = [at_age[(c, 0.05)] for c in top.idp]
    top["expected_95th"] = [at_age[(c, 0.95)] for c in top.idp]
    curves = curves[curves.idp.isin(list(top.idp.head(n_curves)))].reset_index(drop=True)

    info = getattr(model, "info_", {}) or {}
    coding = info.get("data", {})
    header = {"Subject": str(subject), "Age": f"{_years(age)} years"}
    for c, v in covariates.items():
        label = coding.get(f"{c}_coding", {}).get(v)
        header[c.capitalize()] = f"{v} ({label})" if label else v
    summary = getattr(model, "training_summary_", {}) or {}
    n_train = (summary.get("n_train") or 0) + (summary.get("n_validation") or 0)
    header["Model"] = f"{model.model_type}, reference of {n_train} healthy people aged {_years(lo)}-{_years(hi)}"
    if info.get("source"):
        header["Reference data"] = str(info["source"])[:200]
    adapted = [f"{lv['covariate']}={lv['level']} ({lv['n_controls']} local controls)"
               for rec in getattr(model, "adaptation_", []) for lv in rec["levels"]]
    if adapted:
        header["Adapted to"] = "; ".join(adapted)
    header["Date"] = datetime.now(UTC).strftime("%Y-%m-%d")

    mz = float(row.get("multivariate_z", np.nan))
    d2 = float(row.get("multivariate_d2", np.nan))
    multivariate = {"d2": d2, "z": mz, "centile": float(special.ndtr(mz) * 100) if np.isfinite(mz) else np.nan,
                    "n_idps": len(measured), **held_out_rank(info, d2, len(measured))}
    calibration = getattr(model, "multivariate_calibration_", None)
    if calibration is not None:  # the centile is among new healthy people, not under the model
        multivariate["calibrated_on"] = calibration.n_rows
        multivariate["calibrated_rows"] = calibration.rows_text()
    flags = []
    if bool(row.get("out_of_range", False)) or not lo <= age <= hi:
        flags.append(f"Age {_years(age)} is outside the reference's {_years(lo)}-{_years(hi)}: centiles are "
                     "extrapolated.")
    unmeasured = list(frame.idp[frame.z.isna()])
    if unmeasured:
        flags.append(f"{len(unmeasured)} of the model's IDPs have no value for this subject and are not scored: "
                     f"{', '.join(unmeasured[:8])}{' and more' if len(unmeasured) > 8 else ''}.")
    if at_shared:
        named = "; ".join(f"{c} = {v:g} ({100 * share:.0f}% of the reference)" for c, v, share in at_shared[:6])
        flags.append(f"{len(at_shared)} IDP value(s) sit at a value most of the reference shares: {named}"
                     f"{' and more' if len(at_shared) > 6 else ''}. Their centile is drawn at random within that "
                     "share, so their z is no deviation; they are left out of the most deviant IDPs.")
    beyond = int(row.get("n_beyond_samples", 0) or 0)
    if beyond:
        flags.append(f"{beyond} IDP value(s) lie beyond all model samples: their z is extrapolated (a tail "
                     "model for diffusion models; less certain than z inside the samples).")
    if any(str(row.get(c)) == lv["level"] for rec in getattr(model, "adaptation_", []) for lv in rec["levels"]
           for c in [lv["covariate"]]):
        flags.append("The subject's site was adapted from local controls: its centiles rest on them.")
    if mri is not None:
        header["MRI scan"] = mri.scan
        flags += [f"MRI: {w}" for w in mri.warnings]
    return SubjectReport(str(subject), header, profile.reset_index(drop=True), top, curves, age, multivariate,
                         flags, mri=mri)


def _years(age: float) -> str:
    """An age as a report shows it: to a tenth of a year (45.1, not 45.11394), whole years without a decimal."""
    return f"{round(float(age), 1):g}"


def held_out_rank(info: dict, d2: float, n_idps: int) -> dict[str, float]:
    """Where ``d2`` (over ``n_idps`` IDPs) ranks among the multivariate d2 of the healthy held-out subjects that a
    model card records (``info["held_out"]["multivariate_d2"]``, over ``multivariate_n_idps`` IDPs):
    ``held_out_centile`` (0..100, ties half) and ``held_out_n``; empty where the card has none or the IDP counts
    differ (d2 over fewer IDPs is not comparable)."""
    held = (info or {}).get("held_out") or {}
    values = np.asarray(held.get("multivariate_d2") or [], float)
    if not values.size or not np.isfinite(d2) or held.get("multivariate_n_idps") != n_idps:
        return {}
    centile = ((values < d2).sum() + 0.5 * (values == d2).sum()) / values.size * 100
    return {"held_out_centile": float(centile), "held_out_n": int(values.size)}


def mri_subject_report(findings: MriFindings, age: float, sex: str, model_name: str, n_train: int | None,
                       age_range: tuple[float, float], subject: str | None = None) -> SubjectReport:
    """A subject report of an MRI scan alone (no IDP table): header, index, quality warnings and slices."""
    lo, hi = age_range
    header = {"Subject": subject or findings.scan, "Age": f"{age:g} years", "Sex": sex, "MRI scan": findings.scan,
              "Model": f"{model_name}, trained on {n_train if n_train is not None else '?'} healthy scans aged "
                       f"{lo:.0f}-{hi:.0f} ({findings.method})",
              "Date": datetime.now(UTC).strftime("%Y-%m-%d")}
    flags = [f"MRI: {w}" for w in findings.warnings]
    empty = pd.DataFrame()
    return SubjectReport(subject or findings.scan, header, empty, empty, empty, float(age),
                         {"d2": np.nan, "z": np.nan, "centile": np.nan, "n_idps": 0}, flags, mri=findings)
