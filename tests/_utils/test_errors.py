"""How error messages name a table's row."""

from __future__ import annotations

import numpy as np

from normcore._utils.errors import column_not_found, table_row


def test_rows_are_named_as_the_users_file_numbers_them():
    assert table_row(3, 0) == "row 4"  # integer index label: the file's 1-based data row
    assert table_row(np.int64(9), 2) == "row 10"
    assert table_row("sub-07", 1) == "row 'sub-07'"
    assert table_row(None, 2) == "row 3"


def test_column_not_found_names_the_column_meant_without_picking_it():
    columns = ["sub_id", " Age ", "sex", "Site"]
    assert "did you mean ' Age '?" in str(column_not_found("t.csv", "age", "age", columns))
    assert "did you mean 'Site'?" in str(column_not_found("t.csv", "covariate", "site", columns))
    assert "did you mean 'sub_id'?" in str(column_not_found("t.csv", "subject ID", "sub-id", columns))
    message = str(column_not_found("t.csv", "visit", "visit", columns))
    assert message == "t.csv: visit column 'visit' not found"  # nothing close: no guess

