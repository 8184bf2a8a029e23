"""Errors with user-facing messages (naming the file, column and problem)."""

import difflib
from collections.abc import Iterable

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


def column_hint(column: str, columns: Iterable[object]) -> str:
    """`` (did you mean 'Age'?)`` naming the table's column that ``column`` most likely meant, or "".

    A column spelled the same up to case and surrounding spaces (``Age`` for ``age``) is named first; otherwise the
    closest spelling (difflib, ratio at least 0.8), if any. The column is never picked silently: which one holds the
    user's ages or sites is theirs to say."""
    names = [str(c) for c in columns]
    folded = [n for n in names if n.strip().casefold() == column.strip().casefold()]
    close = folded or difflib.get_close_matches(column, names, n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def column_not_found(label: str, what: str, column: str, columns: Iterable[object]) -> InputError:
    """The error for a column the table lacks, with :func:`column_hint`."""
    return InputError(f"{label}: {what} column {column!r} not found{column_hint(column, columns)}")
