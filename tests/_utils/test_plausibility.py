import numpy as np
import pandas as pd
import pytest

from normcore._utils.errors import InputError
from normcore._utils.plausibility import age_unit_hint, check_ages
from normcore.tabular.validation import validate_table


def test_ages_in_months_or_days_are_named_as_such():
    """ABCD's interview_age (months, 107-133) and ages in days are refused with the unit they seem to be in."""
    months = np.linspace(107.0, 133.0, 40)
    with pytest.raises(InputError, match=r"impossible age .* are they in months\? .*divide by 12"):
        check_ages(months, "table")
    assert "in days?" in age_unit_hint(np.linspace(7000.0, 30000.0, 20))
    table = pd.DataFrame({"interview_age": months, "volume": np.linspace(1.0, 2.0, 40)})
    errors = validate_table(table, age="interview_age", covariates=[], idps=["volume"]).errors
    assert len(errors) == 1 and "are they in months?" in errors[0].message


def test_a_sentinel_or_a_typo_is_not_taken_for_a_unit():
    ages = np.r_[np.linspace(20.0, 80.0, 30), 999.0, 999.0]
    assert age_unit_hint(ages) == ""  # 999 twice: a code for "unknown"
    assert age_unit_hint(np.r_[np.linspace(20.0, 80.0, 30), 450.0]) == ""  # one value: a typo
    assert age_unit_hint(np.r_[np.linspace(-1.0, 80.0, 30), 200.0, 300.0]) == ""  # a negative age: not a unit
    assert age_unit_hint(np.linspace(20.0, 80.0, 30)) == ""
