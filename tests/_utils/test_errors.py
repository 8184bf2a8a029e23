"""How error messages name a table's row."""

from __future__ import annotations

import numpy as np

from normcore._utils.errors import table_row


def test_rows_are_named_as_the_users_file_numbers_them():
    assert table_row(3, 0) == "row 4"  # integer index label: the file's 1-based data row
    assert table_row(np.int64(9), 2) == "row 10"
    assert table_row("sub-07", 1) == "row 'sub-07'"
    assert table_row(None, 2) == "row 3"
