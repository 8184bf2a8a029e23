"""Errors with user-facing messages (naming the file, column and problem)."""

import numpy as np


class InputError(ValueError):
    """Bad user input: the message is meant to be shown as is, in one line."""


def table_row(index_label: object, position: int) -> str:
    """How an error message names a table's row: by the row's index label as the user's file numbers its data rows
    (1-based, header not counted) when the label is an integer, as tables read from a file keep it through any subset
    or shuffle; otherwise by the label itself, or by ``position`` (0-based) when there is no label."""
    if index_label is None:
        return f"row {position + 1}"
    if isinstance(index_label, int | np.integer) and not isinstance(index_label, bool):
        return f"row {int(index_label) + 1}"
    return f"row {index_label!r}"
