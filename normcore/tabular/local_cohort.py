"""A local cohort against a reference model: conform its columns, adapt on its controls, keep some back.

The steps a clinical site takes with a shipped reference: map its own table's columns and codes to the
model's (:func:`conform_table`, from a mapping the user has confirmed), adapt the reference to its site
on part of its healthy controls, and check the adapted model on the controls it never saw
(:func:`adapt_to_cohort`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore.tabular.base import NormativeModel
from normcore.tabular.covariates import category_label


def conform_table(table: pd.DataFrame, model: NormativeModel, columns: dict[str, str],
                  levels: dict[str, dict[str, str]] | None = None, constants: dict[str, str] | None = None,
                  keep: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """The table with the model's column names and level codes.

    ``columns`` maps model columns (age, covariates, IDPs) to table columns; ``constants`` gives a covariate
    one value for every row (e.g. the site's name when the table has no site column); ``levels`` maps a
    covariate's table values to the model's levels (values not in the map are kept as they are, so a new
    site stays a new level); ``keep`` lists other table columns to carry along (ID, group).
    """
    constants = dict(constants or {})
    levels = dict(levels or {})
    need = [model.age_, *model.covariates_]
    missing = [c for c in need if c not in columns and c not in constants]
    if missing:
        raise InputError(f"no table column is mapped to the model's {missing}")
    idps = [c for c in model.idps_ if c in columns]
    if not idps:
        raise InputError(f"no table column is mapped to any of the model's {len(model.idps_)} IDPs")
    absent = [c for c in {*columns.values(), *keep} if c not in table.columns]
    if absent:
        raise InputError(f"column(s) {sorted(absent)[:5]} not in the table")
    out: dict[str, pd.Series] = {col: table[col] for col in keep}
    out[model.age_] = table[columns[model.age_]]
    for cov in model.covariates_:
        if cov in constants:
            out[cov] = pd.Series(category_label(constants[cov]), index=table.index)
            continue
        values = table[columns[cov]].map(lambda v: category_label(v) if pd.notna(v) else v)
        mapping = levels.get(cov, {})
        out[cov] = values.map(lambda v, m=mapping: m.get(v, v) if isinstance(v, str) else v)
    for idp in idps:
        out[idp] = table[columns[idp]]
    out = pd.DataFrame(out, index=table.index)
    return out.reset_index(drop=True)


@dataclass
class CohortAdaptation:
    """An adapted model, which controls adapted it, which were held back, and how it scores the latter."""

    model: NormativeModel
    adapted_on: pd.Index
    held_out: pd.Index
    check: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def held_out_check(scores: pd.DataFrame, idps: list[str]) -> dict:
    """Coverage of the central 95% interval, mean and SD of z, and the PIT-KS pass rate of held-out controls."""
    z = scores[[f"z:{c}" for c in idps if f"z:{c}" in scores]].to_numpy(float)
    u = scores[[f"centile:{c}" for c in idps if f"centile:{c}" in scores]].to_numpy(float)
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        return {"n": int(len(scores))}
    pvals = [stats.kstest(col[np.isfinite(col)], "uniform").pvalue for col in u.T if np.isfinite(col).sum() >= 5]
    return {"n": int(len(scores)), "coverage95": float((np.abs(finite) < 1.959964).mean()),
            "z_mean": float(finite.mean()), "z_sd": float(finite.std()),
            "pit_ks_pass_rate": float(np.mean(np.asarray(pvals) >= 0.01)) if pvals else None}


def adapt_to_cohort(model: NormativeModel, table: pd.DataFrame, control_mask: np.ndarray | pd.Series,
                    holdout_share: float = 0.2, seed: int = 0, n_samples: int = 500,
                    progress: Progress | None = None) -> CohortAdaptation:
    """Adapt ``model`` on the controls of a conformed ``table`` except a held-out share, then score those.

    ``holdout_share`` of the controls (at least 5 when it is not 0) is kept out of the adaptation; the
    adapted model's calibration on them is the trust check. With ``holdout_share=0`` every control adapts
    and there is no check (said in the warnings).
    """
    progress = as_progress(progress)
    if not 0 <= holdout_share < 1:
        raise InputError(f"held-out share {holdout_share} must be in [0, 1)")
    controls = table[np.asarray(control_mask, bool)]
    if controls.empty:
        raise InputError("the table has no healthy controls to adapt on")
    rng = np.random.default_rng(seed)
    order = controls.index.to_numpy()[rng.permutation(len(controls))]
    n_hold = 0 if holdout_share == 0 else max(5, int(round(holdout_share * len(controls))))
    if n_hold and len(controls) - n_hold < 5:
        raise InputError(f"{len(controls)} controls are too few to hold {n_hold} back and adapt on the rest; "
                         "lower the held-out share")
    held, used = pd.Index(order[:n_hold]), pd.Index(order[n_hold:])
    progress.update("adapt", 0, 2)
    adapted = model.adapt(table.loc[used], progress=None, label="local controls")
    warnings = list(adapted.adapt_warnings_)
    check = {}
    if n_hold:
        progress.update("check", 1, 2)
        scores = adapted.score(table.loc[held], n_samples=n_samples, seed=seed, label="held-out controls")
        check = held_out_check(scores, adapted.idps_)
    else:
        warnings.append("no controls were held out: the adapted model's calibration at this site is unchecked")
    progress.update("done", 2, 2)
    return CohortAdaptation(adapted, used, held, check, warnings)
