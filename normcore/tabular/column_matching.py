"""Matching a user's table to a model's columns and level codes, for the user to confirm (never silently).

FreeSurfer exports name the same measure differently (``lh_G_and_S_frontomargin`` in one table,
``lh_G&S_frontomargin_thickness`` in another; ``Left_Hippocampus`` or ``left-hippocampus``). Names are
compared after normalisation: lower case, ``&`` read as ``and``, every run of other characters removed,
and a trailing measure word (thickness, volume, area) dropped when the other name has none.
"""

from __future__ import annotations

import re

import pandas as pd

from normcore.tabular.covariates import category_label

MEASURE_SUFFIXES = ("thickness", "thick", "volume", "vol", "area")
SEX_WORDS = {"f": "female", "female": "female", "w": "female", "woman": "female", "m": "male", "male": "male",
             "man": "male"}
ID_NAMES = ("sub_id", "subject_id", "participant_id", "subject", "participant", "id", "eid", "subjid", "rid")
GROUP_NAMES = ("group", "diagnosis", "dx", "dx_group", "status", "label", "cohort", "condition")
VISIT_NAMES = ("visit", "session", "timepoint", "wave", "visit_id", "visit_number", "session_id", "ses")
AGE_NAMES = ("age", "age_years", "age_at_scan", "age_at_mri", "age_yrs", "subject_age", "age_y", "interview_age")
"""Names of an age column, in order of preference (``interview_age``: the NIMH Data Archive's, ABCD's, in months, which
validation then names as such)."""
COVARIATE_NAMES = {"sex": ("sex", "gender", "biological_sex", "sex_mf"),
                   "site": ("site", "scanner", "centre", "center", "site_id", "scanner_id", "acquisition_site")}
"""Other names of a model's usual covariates, tried in this order after the covariate's own name."""
MAX_LEVEL_GUESS_VALUES = 50
"""A column with more distinct values than this is not read to guess a categorical covariate from its values."""


def normalise_name(name: str) -> str:
    """Lower case, '&' as 'and', only letters and digits kept."""
    text = str(name).lower().replace("&", "and")
    return re.sub(r"[^a-z0-9]+", "", text)


def _stem(name: str) -> str:
    norm = normalise_name(name)
    for suffix in MEASURE_SUFFIXES:
        if norm.endswith(suffix) and len(norm) > len(suffix):
            return norm[: -len(suffix)]
    return norm


def match_columns(table_columns: list[str], model_columns: list[str]) -> dict[str, str]:
    """{model column: table column} for every model column with one unambiguous match in the table.

    Exact names first, then equal normalised names, then equal names without a measure suffix. A table
    column is used once; a model column with several candidates at the same step is left unmatched.
    """
    table_columns = [str(c) for c in table_columns]
    out: dict[str, str] = {}
    used: set[str] = set()
    for key in (str, normalise_name, _stem):
        index: dict[str, list[str]] = {}
        for col in table_columns:
            if col not in used:
                index.setdefault(key(col), []).append(col)
        for model_col in model_columns:
            if model_col in out:
                continue
            candidates = [c for c in index.get(key(model_col), []) if c not in used]
            if len(candidates) == 1:
                out[model_col] = candidates[0]
                used.add(candidates[0])
    return out


def guess_column(table_columns: list[str], names: tuple[str, ...]) -> str | None:
    """The first table column whose normalised name is one of ``names`` (in their order of preference)."""
    norm = {normalise_name(c): c for c in table_columns}
    for name in names:
        if normalise_name(name) in norm:
            return norm[normalise_name(name)]
    return None


def guess_usual_covariates(table_columns: list[str]) -> list[str]:
    """The table's columns named as one of the usual covariates (:data:`COVARIATE_NAMES`: sex, site), one each."""
    found = (guess_column(table_columns, names) for names in COVARIATE_NAMES.values())
    return [c for c in found if c is not None]


def guess_covariate_column(table: pd.DataFrame, covariate: str, model_levels: list[str] | None = None,
                           level_names: dict[str, str] | None = None, exclude: tuple[str, ...] = ()) -> str | None:
    """A table column for the model's categorical ``covariate``, for the user to confirm: the first named as the
    covariate or one of its other names (:data:`COVARIATE_NAMES`, e.g. gender for sex); else, with
    ``model_levels``, the first column (not in ``exclude``) whose values all map to a model level
    (:func:`match_levels`, e.g. M/F through the card's ``level_names``); else None. A column of new levels (a new
    site) can only be found by its name."""
    columns = [c for c in table.columns if str(c) not in exclude]
    names = (covariate, *COVARIATE_NAMES.get(normalise_name(covariate), ()))
    named = guess_column(columns, names)
    if named is not None or not model_levels:
        return named
    for col in columns:
        values = table[col].dropna()
        if values.empty or values.nunique() > MAX_LEVEL_GUESS_VALUES:
            continue
        found = match_levels(values, model_levels, level_names)
        if found and all(level is not None for level in found.values()):
            return col
    return None


def match_levels(values: pd.Series, model_levels: list[str], level_names: dict[str, str] | None = None
                 ) -> dict[str, str | None]:
    """{table value: model level or None} for the distinct values of a categorical column.

    Values equal to a model level map to it. With ``level_names`` (the model card's meaning of each level,
    e.g. {"0": "female", "1": "male"}), words such as F/M, female/male, w/man map through those meanings.
    """
    level_names = {str(k): str(v).lower() for k, v in (level_names or {}).items()}
    by_meaning = {SEX_WORDS.get(v, v): k for k, v in level_names.items()}
    out: dict[str, str | None] = {}
    for value in pd.unique(values.dropna()):
        label = category_label(value)
        if label in model_levels:
            out[label] = label
            continue
        meaning = SEX_WORDS.get(label.strip().lower())
        out[label] = by_meaning.get(meaning) if meaning else None
    return out
