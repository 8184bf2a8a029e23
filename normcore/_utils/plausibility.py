"""Plausible values shared by the tabular and imaging halves (ages), checked wherever data enter."""

from __future__ import annotations

import numpy as np

from normcore._utils.errors import InputError, table_row

AGE_LIMITS = (0.0, 130.0)
"""Plausible human ages in years: anything outside is a data error (a unit slip, a date, a sentinel value)."""


def check_ages(age: np.ndarray, label: str, index=None) -> None:
    """Raise :class:`InputError` for a non-finite or implausible age, naming the first such row (by ``index``, the
    table's row labels, when given: :func:`~normcore._utils.errors.table_row`)."""
    age = np.atleast_1d(np.asarray(age, float))
    bad = ~np.isfinite(age) | (age < AGE_LIMITS[0]) | (age > AGE_LIMITS[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = f" in {table_row(None if index is None else index[row], row)}" if age.size > 1 else ""
        raise InputError(f"{label} has an impossible age {age[row]:g}{where} (ages must be finite and within "
                         f"{AGE_LIMITS[0]:g}-{AGE_LIMITS[1]:g} years)")
