"""Checks of a user table against a model specification (age, covariates, IDPs).

Nothing is changed silently: :func:`validate_table` returns a report of errors (the table cannot be
used as is) and warnings (with the proposed action, e.g. drop a constant column); callers decide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from normcore._utils.errors import InputError, column_hint
from normcore._utils.plausibility import AGE_LIMITS, age_unit_hint
from normcore.tabular.column_matching import ID_NAMES, normalise_name


@dataclass
class Finding:
    level: str  # "error" | "warning" | "info"
    column: str | None
    message: str


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_table`."""

    findings: list[Finding] = field(default_factory=list)
    constant_idps: list[str] = field(default_factory=list)
    rows_with_missing: list[int] = field(default_factory=list)  # any of age, covariates or IDPs missing
    rows_missing_covariates: list[int] = field(default_factory=list)  # age or a covariate missing
    duplicate_ids: list[str] = field(default_factory=list)
    small_groups: dict[str, dict[str, int]] = field(default_factory=dict)
    age_range: tuple[float, float] | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def add(self, level: str, column: str | None, message: str) -> None:
        self.findings.append(Finding(level, column, message))

    def raise_errors(self, label: str) -> None:
        """Raise the first error as an :class:`InputError` naming ``label``."""
        if self.errors:
            first = self.errors[0]
            more = f" (and {len(self.errors) - 1} more problems)" if len(self.errors) > 1 else ""
            raise InputError(f"{label}: {first.message}{more}")

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([f.__dict__ for f in self.findings], columns=["level", "column", "message"])


QC_COLUMN_PATTERNS = (r"^avg_en$", r"euler", r"SurfaceHoles$", r"-to-eTIV$")
"""FreeSurfer quality-control measures and derived ratios: not IDPs unless a user picks them."""


def is_qc_column(name: str) -> bool:
    """True for a known QC or derived column (Euler number, surface holes, ratios to eTIV)."""
    return any(re.search(p, str(name), flags=re.IGNORECASE) for p in QC_COLUMN_PATTERNS)


def resolve_idps(df: pd.DataFrame, idps: list[str] | None = None, idps_regex: str | None = None,
                 exclude: list[str] | tuple[str, ...] = (), label: str = "table") -> list[str]:
    """Pick IDP columns by explicit list, by regular expression, or (neither) all numeric columns left."""
    if idps:
        missing = [c for c in idps if c not in df.columns]
        if missing:
            raise InputError(f"{label}: IDP column(s) not found: {', '.join(missing[:5])}")
        return list(idps)
    if idps_regex:
        try:
            pattern = re.compile(idps_regex)
        except re.error as exc:
            raise InputError(f"IDP pattern {idps_regex!r} is not a valid regular expression ({exc})") from None
        chosen = [c for c in df.columns if pattern.search(c) and c not in exclude]
        if not chosen:
            raise InputError(f"{label}: no column matches the IDP pattern {idps_regex!r}")
        return chosen
    chosen = [c for c in df.columns if c not in exclude and pd.api.types.is_numeric_dtype(df[c])]
    if not chosen:
        raise InputError(f"{label}: no numeric IDP columns found besides the covariates")
    return chosen


def _numeric_problem(series: pd.Series) -> str | None:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return None
    converted = pd.to_numeric(series, errors="coerce")
    bad = series[converted.isna() & series.notna()]
    if len(bad):
        return f"non-numeric values such as {str(bad.iloc[0])!r} in {len(bad)} row(s)"
    return None


MANY_LEVELS = 200
"""A categorical covariate with more levels than this is checked for being a continuous measure instead."""


def _looks_continuous(values: pd.Series, n_levels: int) -> bool:
    """True for a 'categorical' column with over :data:`MANY_LEVELS` levels that are most of its rows, or numbers that
    are not all whole: a measure (eTIV, an IDP) named as a covariate. A consortium's hundreds of sites (site labels, or
    whole-number codes, each shared by several subjects) are not."""
    if n_levels <= MANY_LEVELS:
        return False
    numbers = pd.to_numeric(values.dropna(), errors="coerce")
    fractional = numbers.notna().all() and bool((numbers % 1 != 0).any())
    return n_levels > 0.5 * values.notna().sum() or fractional


def validate_table(df: pd.DataFrame, age: str, covariates: list[str], idps: list[str],
                   id_col: str | None = None, min_group_size: int = 10,
                   control_mask: np.ndarray | None = None) -> ValidationReport:
    """Check a table for use with a normative model; see :class:`ValidationReport`."""
    report = ValidationReport()
    roles = [("age", age)] + [("covariate", c) for c in covariates] + [("IDP", c) for c in idps]
    seen: dict[str, str] = {}
    for role, col in roles:
        if col in seen:
            report.add("error", col, f"column {col!r} is used twice (as {seen[col]} and as {role}); each column "
                       "can have one role")
        seen.setdefault(col, role)
    if id_col and id_col in seen:
        report.add("error", id_col, f"the subject ID column {id_col!r} cannot also be the {seen[id_col]}")
    if report.errors:
        return report
    needed = [age, *covariates, *idps] + ([id_col] if id_col else [])
    for col in needed:
        if col not in df.columns:
            report.add("error", col, f"column {col!r} not found{column_hint(col, df.columns)} "
                       f"(columns: {', '.join(map(str, df.columns[:8]))}…)")
    if report.errors:
        return report
    for col in [age, *idps]:
        problem = _numeric_problem(df[col])
        if problem:
            report.add("error", col, f"column {col!r} has {problem}")
    if report.errors:
        return report
    ages = pd.to_numeric(df[age], errors="coerce")
    if ages.notna().any():
        report.age_range = (float(ages.min()), float(ages.max()))
        a = ages.to_numpy(float)
        if (np.isinf(a) | (a < AGE_LIMITS[0]) | (a > AGE_LIMITS[1])).any():
            report.add("error", age, f"column {age!r} has impossible ages (infinite, or outside "
                       f"{AGE_LIMITS[0]:g}–{AGE_LIMITS[1]:g} years).{age_unit_hint(a)}".rstrip())
        elif report.age_range[0] == report.age_range[1] and len(a) > 1:
            report.add("warning", age, f"every subject has age {report.age_range[0]:g}: a model fitted on them has no "
                       "age curve, and subjects of other ages are scored as if that age (flagged out_of_range)")
    values = df[idps].apply(pd.to_numeric, errors="coerce")
    if np.isinf(values.to_numpy(dtype=float)).any():
        cols = [c for c in idps if np.isinf(values[c].to_numpy(dtype=float)).any()]
        report.add("error", cols[0], f"column {cols[0]!r} has infinite values")
    for col in idps:
        v = values[col].dropna()
        if len(v) and (v.nunique() <= 1):
            kind = "all zero" if (v == 0).all() else "constant"
            report.constant_idps.append(col)
            report.add("warning", col, f"IDP {col!r} is {kind}; it carries no information and will be dropped")
    covs = df[[age, *covariates]]
    no_covariates = covs.isna().any(axis=1).to_numpy() | ages.isna().to_numpy()
    no_idp = values.isna().any(axis=1).to_numpy()
    report.rows_with_missing = np.flatnonzero(no_covariates | no_idp).tolist()
    report.rows_missing_covariates = np.flatnonzero(no_covariates).tolist()
    if no_covariates.any():
        cols = covs.columns[covs.isna().any()].tolist() or [age]
        report.add("warning", cols[0], f"{int(no_covariates.sum())} row(s) miss age or a covariate (in "
                   f"{', '.join(cols[:5])}); they will be dropped")
    incomplete = no_idp & ~no_covariates
    if incomplete.any():
        cols = [c for c in idps if values[c].isna().any()]
        share = float(values[~no_covariates].isna().to_numpy().mean())
        report.add("warning", cols[0], f"{int(incomplete.sum())} row(s) miss some IDP values ({100 * share:.1f}% of "
                   f"the IDP values, in {len(cols)} IDP(s): {', '.join(cols[:5])}); the diffusion model trains on "
                   "them (each IDP on its observed values), the SHASH and BLR baselines drop them")
    if id_col:
        dup = df[id_col][df[id_col].duplicated(keep=False)].astype(str).unique().tolist()
        report.duplicate_ids = dup
        if dup:
            report.add("warning", id_col, f"{len(dup)} duplicate subject ID(s), e.g. {dup[0]!r}")
    ref = df if control_mask is None else df[control_mask]
    for col in covariates:
        counts = ref[col].astype(str).value_counts()
        small = counts[counts < min_group_size]
        if len(small):
            report.small_groups[col] = small.to_dict()
            report.add("warning", col, f"{len(small)} level(s) of {col!r} have fewer than {min_group_size} "
                       f"controls (e.g. {small.index[0]!r}: {int(small.iloc[0])}); their effects are poorly estimated")
        if _looks_continuous(ref[col], counts.size):
            report.add("error", col, f"categorical covariate {col!r} has {counts.size} levels in {len(ref)} rows; "
                       "is it continuous?")
    if report.age_range:
        report.add("info", age, f"age range {report.age_range[0]:.1f}–{report.age_range[1]:.1f}")
    return report


def looks_like_subject_ids(name: str, values: pd.Series) -> bool:
    """Whether a numeric column is a subject ID, not a measure: named as IDs are (``eid`` in UK Biobank, ``sub_id``,
    ``participant_id``: :data:`~normcore.tabular.column_matching.ID_NAMES`) and holding whole numbers only."""
    if normalise_name(name) not in {normalise_name(n) for n in ID_NAMES}:
        return False
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return len(numbers) > 0 and bool((numbers % 1 == 0).all())


def default_idps(df: pd.DataFrame, exclude: list[str] | tuple[str, ...] = (),
                 label: str = "table") -> tuple[list[str], list[str]]:
    """The IDPs of a table whose IDPs were not named: every numeric column not in ``exclude``, less those of subject
    IDs (:func:`looks_like_subject_ids`); and a warning naming each ID column left out."""
    chosen = resolve_idps(df, exclude=exclude, label=label)
    ids = [c for c in chosen if looks_like_subject_ids(c, df[c])]
    if len(ids) == len(chosen):
        raise InputError(f"{label}: no numeric IDP columns found besides the covariates and the subject IDs "
                         f"({', '.join(map(repr, ids))})")
    return [c for c in chosen if c not in ids], [f"column {c!r} holds subject IDs (its name; whole numbers): it is not "
                                                 "taken as an IDP (name the IDPs to use it as one)" for c in ids]


def prepare_training_table(df: pd.DataFrame, age: str, covariates: list[str], idps: list[str] | None,
                           idps_regex: str | None, label: str, min_rows: int = 20,
                           keep_incomplete: bool = False) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Validate a training table; drop constant IDPs and unusable rows (returned as warnings). Chosen by default
    (neither ``idps`` nor ``idps_regex``), the IDPs leave out numeric columns of subject IDs
    (:func:`looks_like_subject_ids`), with a warning.

    Rows missing age or a covariate are dropped. Rows missing some IDP values are dropped too, unless
    ``keep_incomplete`` (a model that fits each IDP on its observed values): then only rows with no usable IDP value
    go, and IDPs observed in fewer than ``min_rows`` of the kept rows are dropped. Returns (rows, usable IDP names,
    warning messages); raises :class:`InputError` on errors.
    """
    if idps or idps_regex:
        idps, warnings = resolve_idps(df, idps, idps_regex, exclude=[age, *covariates], label=label), []
    else:
        idps, warnings = default_idps(df, exclude=[age, *covariates], label=label)
    report = validate_table(df, age, covariates, idps)
    report.raise_errors(label)
    warnings += [f.message for f in report.warnings]
    idps = [c for c in idps if c not in report.constant_idps]
    if not idps:
        raise InputError(f"{label}: no usable IDP columns")
    if not keep_incomplete:
        data = df.drop(index=df.index[report.rows_with_missing])
        if len(data) < min_rows:
            raise InputError(f"{label}: only {len(data)} complete rows; at least {min_rows} are needed to fit")
        return data, idps, warnings
    data = df.drop(index=df.index[report.rows_missing_covariates])
    observed = data[idps].apply(pd.to_numeric, errors="coerce").notna()
    sparse = [c for c in idps if observed[c].sum() < min_rows]
    if sparse:
        warnings.append(f"{len(sparse)} IDP(s) are observed in fewer than {min_rows} rows and will be dropped: "
                        f"{', '.join(sparse[:5])}")
        idps = [c for c in idps if c not in sparse]
        if not idps:
            raise InputError(f"{label}: no IDP is observed in at least {min_rows} rows")
    empty = ~observed[idps].any(axis=1).to_numpy()
    if empty.any():
        warnings.append(f"{int(empty.sum())} row(s) have no value of any IDP and will be dropped")
        data = data[~empty]
    if len(data) < min_rows:
        raise InputError(f"{label}: only {len(data)} usable rows; at least {min_rows} are needed to fit")
    return data, idps, warnings
