"""The content of a cohort report: which IDPs separate patients from controls, how strongly, and how many
people are extreme where.

From a score table with a group column: group sizes; per IDP, Cohen's d of z (patients minus controls; pooled
SD) with its approximate 95% CI (SE = sqrt((n1 + n2) / (n1 n2) + d^2 / (2 (n1 + n2)))), the AUC of z for
patients vs controls (Mann-Whitney; below 0.5 when patients are lower) with the Hanley-McNeil (1982) 95% CI,
and the share of each group beyond |z| > 1.96; per subject, the count of extreme IDPs and the multivariate
score; the multivariate score by group. A value at a point mass most of the reference shares (the 0 of a structure
most brains lack) is never counted extreme: its z is a random draw within that share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from scipy import stats

from normcore._utils.errors import InputError, column_not_found
from normcore.metrics.clinical import cohen_d
from normcore.reports.subject import DISCLAIMER
from normcore.tabular.anatomy import anatomical_group, group_order
from normcore.tabular.point_masses import at_shared_masses

EXTREME = 1.959964


def auc_hanley_mcneil(patients: np.ndarray, controls: np.ndarray) -> tuple[float, float, float]:
    """AUC (probability that a patient's value exceeds a control's; Mann-Whitney) and its Hanley-McNeil CI."""
    p, c = patients[np.isfinite(patients)], controls[np.isfinite(controls)]
    n1, n2 = len(p), len(c)
    if not n1 or not n2:
        return np.nan, np.nan, np.nan
    ranks = stats.rankdata(np.concatenate([p, c]))
    auc = float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = np.sqrt(max(auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n2 - 1) * (q2 - auc**2), 0.0) / (n1 * n2))
    return auc, max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se)


@dataclass
class CohortReport:
    """Everything a cohort report shows, as plain data."""

    header: dict[str, str]
    groups: pd.DataFrame  # group, n
    per_idp: pd.DataFrame  # idp, group (anatomical), cohen_d, d_lo, d_hi, auc, auc_lo, auc_hi, extreme shares
    per_subject: pd.DataFrame  # subject (the ID; row: its row number without id_col), group, n_extreme,
    #                            multivariate_z
    multivariate: pd.DataFrame  # by group: n, mean, median of multivariate_z, share above 1.645
    disclaimer: str = DISCLAIMER
    notes: list[str] = field(default_factory=list)


def cohort_report(model, scores: pd.DataFrame, group_col: str, control_value: str = "control",
                  id_col: str | None = None) -> CohortReport:
    """The cohort report of ``scores`` (the output of ``score``) with patients = rows not equal to
    ``control_value`` in ``group_col``."""
    if group_col not in scores.columns:
        raise column_not_found("the scores", "group", group_col, scores.columns)
    idps = [c for c in model.idps_ if f"z:{c}" in scores.columns]
    if not idps:
        raise InputError("the scores hold no z: column of the model's IDPs (is this the output of `score`?)")
    is_control = (scores[group_col].astype(str) == str(control_value)).to_numpy()
    if is_control.all() or not is_control.any():
        raise InputError(f"a cohort report needs controls ({group_col} == {control_value!r}) and other subjects; "
                         f"found {int(is_control.sum())} controls of {len(scores)}")
    z = scores[[f"z:{c}" for c in idps]].to_numpy(float)
    extreme = (np.abs(z) > EXTREME) & ~at_shared_masses(scores, idps, model.point_masses_)
    rows = []
    for j, name in enumerate(idps):
        d, d_lo, d_hi = cohen_d(z[~is_control, j], z[is_control, j])
        auc, a_lo, a_hi = auc_hanley_mcneil(z[~is_control, j], z[is_control, j])
        rows.append({"idp": name, "group": anatomical_group(name), "cohen_d": d, "d_lo": d_lo, "d_hi": d_hi,
                     "auc": auc, "auc_lo": a_lo, "auc_hi": a_hi,
                     "extreme_patients": float(np.mean(extreme[~is_control, j])),
                     "extreme_controls": float(np.mean(extreme[is_control, j]))})
    rank = {g: i for i, (g, _) in enumerate(group_order(idps))}
    per_idp = pd.DataFrame(rows)
    per_idp = per_idp.assign(_g=per_idp.group.map(rank)).sort_values(["_g", "cohen_d"], kind="stable")
    per_idp = per_idp.drop(columns="_g").reset_index(drop=True)
    labels = scores[group_col].astype(str).to_numpy()
    if id_col:
        if id_col not in scores.columns:
            raise column_not_found("the scores", "subject ID", id_col, scores.columns)
        who = {"subject": scores[id_col].astype(str).to_numpy()}
    else:  # the row numbers a subject report's --subject takes without --id-col, named so they are not read as IDs
        who = {"row": np.arange(len(scores))}
    mz = scores["multivariate_z"].to_numpy(float) if "multivariate_z" in scores else np.full(len(scores), np.nan)
    per_subject = pd.DataFrame({**who, "group": labels, "n_extreme": extreme.sum(1),
                                "multivariate_z": mz}).sort_values("n_extreme", ascending=False, kind="stable")
    groups = pd.Series(labels).value_counts().rename_axis("group").reset_index(name="n")
    multi = per_subject.groupby("group").multivariate_z.agg(
        n="size", mean="mean", median="median", share_above_95th=lambda v: float((v > 1.645).mean()))
    header = {"Cohort": f"{len(scores)} subjects: " + ", ".join(f"{g} {n}" for g, n in groups.itertuples(index=False)),
              "Controls": f"{group_col} == {control_value}", "Model": f"{model.model_type}, {len(idps)} IDPs",
              "Date": datetime.now(UTC).strftime("%Y-%m-%d")}
    return CohortReport(header, groups, per_idp, per_subject.reset_index(drop=True), multi.reset_index())
