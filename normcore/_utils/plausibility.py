"""Plausible values shared by the tabular and imaging halves (ages), checked wherever data enter."""

from __future__ import annotations

import numpy as np

from normcore._utils.errors import InputError

AGE_LIMITS = (0.0, 130.0)
"""Plausible human ages in years: anything outside is a data error (a unit slip, a date, a sentinel value)."""


def check_ages(age: np.ndarray, label: str) -> None:
    """Raise :class:`InputError` for a non-finite or implausible age, naming the first such row."""
    age = np.atleast_1d(np.asarray(age, float))
    bad = ~np.isfinite(age) | (age < AGE_LIMITS[0]) | (age > AGE_LIMITS[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = f" in row {row + 1}" if age.size > 1 else ""
        raise InputError(f"{label} has an impossible age {age[row]:g}{where} (ages must be finite and within "
                         f"{AGE_LIMITS[0]:g}-{AGE_LIMITS[1]:g} years)")
