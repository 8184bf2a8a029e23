"""Longitudinal change between visits: z-scores of change that are N(0, 1) for healthy people.

Each visit is scored against the normative model (its z already accounts for age, sex and site at that
visit). For a pair of consecutive visits of one subject, ``dz = z_later - z_earlier`` (0 where both values sit at
the same point mass of the IDP, :mod:`~normcore.tabular.point_masses`: a 0 that stays 0). For a healthy person
the two z of an IDP are standard normal with correlation rho (the same person measured twice), so
``Var(dz) = 2 (1 - rho)`` and the calibrated change score is

    zchange = dz / sqrt(2 (1 - rho)),

standard normal for healthy people (Rehák Bučková et al., eLife 2025, take the same route). rho per IDP is
estimated from healthy controls with two or more visits in the table when there are enough pairs
(``MIN_CONTROL_PAIRS``), as the correlation of their consecutive z pairs (pooled over pairs, clipped to
[0, 0.99]); otherwise it is supplied (one value or one per IDP) or read from the model card
(``info["longitudinal_rho"]``). Which source was used is returned with the scores.

The multivariate change is the Mahalanobis distance of the zchange vector under the controls' zchange
correlation (shrunk towards the identity by D / (n + D); the identity without control pairs), put on a z
scale through its chi-square distribution, as for the cross-sectional multivariate score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from normcore._utils.errors import InputError, column_not_found
from normcore._utils.progress import Progress
from normcore.tabular.scoring import mahalanobis

MIN_CONTROL_PAIRS = 20  # fewer pairs give a correlation too uncertain to calibrate a change score on
MAX_RHO = 0.99
SIGNIFICANT = 1.959964  # |zchange| above this: a change outside the central 95% of healthy change
AGE_ORDER_TOLERANCE = 0.1  # years: a later visit this much younger than the one before is an error, not rounding


@dataclass
class ChangeResult:
    """Change scores (one row per pair of consecutive visits), the rho used per IDP and where it came from."""

    table: pd.DataFrame
    scores: pd.DataFrame  # the score table of every visit (the input rows, then z:/centile: columns)
    rho: dict[str, float]
    rho_source: str
    n_control_pairs: int
    notes: list[str] = field(default_factory=list)


def _pairs(frame: pd.DataFrame, id_col: str, visit_col: str) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (earlier, later) of consecutive visits of each subject, ordered by visit."""
    order = frame.assign(_pos=np.arange(len(frame))).sort_values([id_col, visit_col], kind="stable")
    same = order[id_col].to_numpy()[1:] == order[id_col].to_numpy()[:-1]
    pos = order["_pos"].to_numpy()
    return pos[:-1][same], pos[1:][same]


def _visit_order(values: pd.Series, visit_col: str) -> pd.Series:
    """Visits as sortable values: numbers when every visit is numeric, else the labels' rank in natural order (runs
    of digits compared as numbers: ``ses-2`` before ``ses-10``, ``m6`` before ``m12``; other text as text)."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric
    labels = values.astype(str)
    ranked = sorted(labels.unique(), key=_natural_key)
    return labels.map({label: rank for rank, label in enumerate(ranked)})


def _natural_key(label: str) -> list[tuple[int, float | str]]:
    """Sort key of a visit label: its digit runs as numbers, the text between them as lower-case text."""
    parts = re.split(r"(\d+(?:\.\d+)?)", label)
    return [(0, float(part)) if i % 2 else (1, part.casefold()) for i, part in enumerate(parts) if part]


def _plain(value: object) -> object:
    """A table value as a message shows it: numpy scalars as Python ones (``0``, not ``np.int64(0)``)."""
    return value.item() if isinstance(value, np.generic) else value


def estimate_rho(z_from: np.ndarray, z_to: np.ndarray) -> np.ndarray:
    """Per-IDP correlation of z between consecutive visits of healthy controls (pairs x D, NaN ignored)."""
    rho = np.full(z_from.shape[1], np.nan)
    for j in range(z_from.shape[1]):
        ok = np.isfinite(z_from[:, j]) & np.isfinite(z_to[:, j])
        if ok.sum() >= 3:
            rho[j] = np.corrcoef(z_from[ok, j], z_to[ok, j])[0, 1]
    return np.clip(rho, 0.0, MAX_RHO)


def change_scores(model, df: pd.DataFrame, id_col: str, visit_col: str, group_col: str | None = None,
                  control_value: str = "control", rho: float | dict[str, float] | None = None,
                  n_samples: int | None = None, seed: int | None = None, progress: Progress | None = None,
                  label: str = "table") -> ChangeResult:
    """Change scores between consecutive visits of every subject with two or more visits.

    Visits are ordered by ``visit_col`` (see :func:`_visit_order`); a later visit more than
    ``AGE_ORDER_TOLERANCE`` years younger than the one before it is an error (the order or the ages are wrong).
    ``rho``: the visit-to-visit correlation of z, one value or one per IDP; used when the table holds fewer
    than ``MIN_CONTROL_PAIRS`` pairs of controls (controls: rows whose ``group_col`` equals
    ``control_value``; without a group column every subject counts as a control, said in the notes).
    """
    for col, what in ((id_col, "subject ID"), (visit_col, "visit")):
        if col not in df.columns:
            raise column_not_found(label, what, col, df.columns)
    if group_col and group_col not in df.columns:
        raise column_not_found(label, "group", group_col, df.columns)
    frame = df.reset_index(drop=True)
    if frame[id_col].isna().any() or frame[visit_col].isna().any():
        raise InputError(f"{label}: every row needs a subject ID ({id_col!r}) and a visit ({visit_col!r})")
    visits = _visit_order(frame[visit_col], visit_col)
    dup = frame.assign(_v=visits).duplicated([id_col, "_v"])
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"{label}: subject {_plain(frame[id_col].iloc[row])!r} has visit "
                         f"{_plain(frame[visit_col].iloc[row])!r} twice (row {row + 1})")
    earlier, later = _pairs(frame.assign(**{visit_col: visits}), id_col, visit_col)
    if not len(earlier):
        raise InputError(f"{label}: no subject has two visits (by {id_col!r} and {visit_col!r})")
    ages = pd.to_numeric(frame[model.age_], errors="coerce").to_numpy(float) if model.age_ in frame else None
    younger = np.flatnonzero(ages[later] < ages[earlier] - AGE_ORDER_TOLERANCE) if ages is not None else []
    if len(younger):  # (a missing or non-numeric age is scoring's to name)
        i, j = earlier[younger[0]], later[younger[0]]
        raise InputError(f"{label}: subject {_plain(frame[id_col].iloc[i])!r} is younger at visit "
                         f"{_plain(frame[visit_col].iloc[j])!r} (age {ages[j]:g}) than at the visit before it, "
                         f"{_plain(frame[visit_col].iloc[i])!r} (age {ages[i]:g}): the visit order and the ages "
                         f"disagree ({len(younger)} pair(s)); visits are ordered by {visit_col!r} (numbers, or labels "
                         "with their digits read as numbers)")
    scores = model.score(frame, n_samples=n_samples, seed=seed, progress=progress, label=label)
    idps = [c for c in model.idps_ if f"z:{c}" in scores.columns]
    z = scores[[f"z:{c}" for c in idps]].to_numpy(float)
    dz = z[later] - z[earlier]
    for idp, _, value, _ in model.point_masses_:  # at the same floor or ceiling twice: no change, whatever the
        if idp in idps:                          # two randomised centiles within its share drew
            v = pd.to_numeric(frame[idp], errors="coerce").to_numpy(float)
            dz[(v[earlier] == value) & (v[later] == value), idps.index(idp)] = 0.0
    notes = list(scores.attrs.get("notes", []))
    if group_col:
        control = (frame[group_col].astype(str) == str(control_value)).to_numpy()
        pair_control = control[earlier] & control[later]
    else:
        pair_control = np.ones(len(earlier), bool)
        notes.append("no group column: every subject's visit pairs count as healthy for the visit-to-visit "
                     "correlation")
    n_control = int(pair_control.sum())
    if n_control >= MIN_CONTROL_PAIRS:
        r = estimate_rho(z[earlier][pair_control], z[later][pair_control])
        source = f"estimated from {n_control} pairs of consecutive control visits in the table"
        missing = np.isnan(r)
        if missing.any():
            raise InputError(f"{label}: too few complete control pairs for IDP(s) "
                             f"{[idps[j] for j in np.flatnonzero(missing)[:5]]}")
    else:
        given = rho if rho is not None else (getattr(model, "info_", {}) or {}).get("longitudinal_rho")
        if given is None:
            raise InputError(f"{label}: {n_control} pair(s) of control visits; at least {MIN_CONTROL_PAIRS} are "
                             "needed to estimate the visit-to-visit correlation: add controls with two visits, "
                             "or supply the correlation (--rho)")
        if isinstance(given, dict):
            absent = [c for c in idps if c not in given]
            if absent:
                raise InputError(f"the supplied visit-to-visit correlation lacks IDP(s) {absent[:5]}")
            r = np.array([float(given[c]) for c in idps])
        else:
            r = np.full(len(idps), float(given))
        if not np.isfinite(r).all() or (r < 0).any() or (r > MAX_RHO).any():
            raise InputError(f"the visit-to-visit correlation must lie within 0-{MAX_RHO}")
        source = "supplied" if rho is not None else "stored in the model card"
    zchange = dz / np.sqrt(2.0 * (1.0 - r))
    corr = _change_correlation(zchange[pair_control]) if n_control >= MIN_CONTROL_PAIRS else np.eye(len(idps))
    d2, mz = mahalanobis(zchange, corr)
    out = pd.DataFrame({id_col: frame[id_col].to_numpy()[earlier],
                        "visit_from": frame[visit_col].to_numpy()[earlier],
                        "visit_to": frame[visit_col].to_numpy()[later]})
    cols = {}
    for j, name in enumerate(idps):
        cols[f"dz:{name}"] = dz[:, j]
        cols[f"zchange:{name}"] = zchange[:, j]
    cols["multivariate_change"] = mz
    cols["multivariate_change_d2"] = d2
    significant = np.abs(np.nan_to_num(zchange)) > SIGNIFICANT
    cols["n_significant_change"] = significant.sum(axis=1)
    cols["significant_idps"] = [";".join(idps[j] for j in np.flatnonzero(row)) for row in significant]
    age = model.age_
    cols["age_from"] = frame[age].to_numpy()[earlier]
    cols["age_to"] = frame[age].to_numpy()[later]
    table = pd.concat([out, pd.DataFrame(cols)], axis=1)
    return ChangeResult(table, scores, {c: float(v) for c, v in zip(idps, r, strict=True)}, source, n_control,
                        notes)


def _change_correlation(zchange: np.ndarray) -> np.ndarray:
    """Correlation of the controls' change scores, shrunk towards the identity by D / (n + D)."""
    ok = np.isfinite(zchange).all(axis=1)
    n, d = int(ok.sum()), zchange.shape[1]
    if n < 3:
        return np.eye(d)
    corr = np.atleast_2d(np.corrcoef(zchange[ok], rowvar=False))
    lam = d / (n + d)
    return (1 - lam) * corr + lam * np.eye(d)


def change_centile(zchange: np.ndarray) -> np.ndarray:
    """The centile (0..1) of a change score among healthy people."""
    return special.ndtr(zchange)
