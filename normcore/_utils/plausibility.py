"""Plausible values shared by the tabular and imaging halves (ages), checked wherever data enter."""

from __future__ import annotations

import numpy as np

from normcore._utils.errors import InputError, table_row

AGE_LIMITS = (0.0, 130.0)
"""Plausible human ages in years: anything outside is a data error (a unit slip, a date, a sentinel value)."""


AGE_UNITS = (("months", 12.0), ("days", 365.25))
"""Other units ages come in (ABCD's ``interview_age`` is in months), and their size in years' terms."""


def age_unit_hint(age: np.ndarray) -> str:
    """A sentence naming the unit ages seem to be in, when two different values or more are above :data:`AGE_LIMITS`
    and all ages fall within it once converted from months (else days) to years; '' otherwise (one value beyond, or
    one repeated, is a typo or a sentinel such as 999, not a unit)."""
    age = np.asarray(age, float)
    age = age[np.isfinite(age)]
    above = age[age > AGE_LIMITS[1]]
    if len(np.unique(above)) < 2 or age.min() < AGE_LIMITS[0]:
        return ""
    for unit, per_year in AGE_UNITS:
        if age.max() / per_year <= AGE_LIMITS[1]:
            return (f" {len(above)} ages are above {AGE_LIMITS[1]:g} (up to {age.max():g}): are they in {unit}? "
                    f"Ages must be in years (divide by {per_year:g}).")
    return ""


def check_ages(age: np.ndarray, label: str, index=None) -> None:
    """Raise :class:`InputError` for a non-finite or implausible age, naming the first such row (by ``index``, the
    table's row labels, when given: :func:`~normcore._utils.errors.table_row`)."""
    age = np.atleast_1d(np.asarray(age, float))
    bad = ~np.isfinite(age) | (age < AGE_LIMITS[0]) | (age > AGE_LIMITS[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = f" in {table_row(None if index is None else index[row], row)}" if age.size > 1 else ""
        raise InputError(f"{label} has an impossible age {age[row]:g}{where} (ages must be finite and within "
                         f"{AGE_LIMITS[0]:g}-{AGE_LIMITS[1]:g} years).{age_unit_hint(age)}".rstrip())
