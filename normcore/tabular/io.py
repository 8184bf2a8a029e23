"""Reading user tables safely: size limits, parse errors turned into one-line messages."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from normcore._utils.atomic import write_atomic
from normcore._utils.errors import InputError

MAX_TABLE_BYTES = 200 * 1024 * 1024


def read_table(source: str | Path | BinaryIO | bytes, name: str | None = None,
               max_bytes: int = MAX_TABLE_BYTES) -> pd.DataFrame:
    """Read a CSV (comma, semicolon or tab separated) into a data frame.

    Raises :class:`InputError` naming the file for a missing, empty, oversized or unparsable file.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "uploaded file")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{label}: file not found")
        if path.stat().st_size > max_bytes:
            raise InputError(f"{label}: file is {path.stat().st_size / 2**20:.0f} MiB, over the "
                             f"{max_bytes / 2**20:.0f} MiB limit")
        raw = path.read_bytes()
    elif isinstance(source, bytes):
        raw = source
    else:
        raw = source.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise InputError(f"{label}: file is over the {max_bytes / 2**20:.0f} MiB limit")
    if not raw.strip():
        raise InputError(f"{label}: file is empty")
    sep = _sniff_separator(raw[:65536].decode("utf-8", errors="replace"))
    try:
        df = pd.read_csv(io.BytesIO(raw), sep=sep, encoding="utf-8-sig", low_memory=False)
    except UnicodeDecodeError:
        raise InputError(f"{label}: not UTF-8 text; save the table as a UTF-8 CSV") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{label}: not a readable CSV table ({first})") from None
    if df.shape[1] < 2:
        raise InputError(f"{label}: found {df.shape[1]} column; expected a table with a header row "
                         "and comma-, semicolon- or tab-separated columns")
    if df.empty:
        raise InputError(f"{label}: the table has a header but no rows")
    header = next(csv.reader([raw.decode("utf-8-sig", errors="replace").splitlines()[0]], delimiter=sep))
    names = pd.Index([h.strip() for h in header])
    dupes = names[names.duplicated()].tolist()
    df.columns = [str(c).strip() for c in df.columns]
    if dupes:
        raise InputError(f"{label}: duplicate column names {dupes[:5]}")
    return df


def _sniff_separator(head: str) -> str:
    first = head.splitlines()[0] if head else ""
    counts = {sep: first.count(sep) for sep in (",", ";", "\t")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def write_table_atomic(df: pd.DataFrame, path: str | Path) -> None:
    """Write a CSV atomically: the file at ``path`` is the old one or the complete new one, never half."""
    write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))
