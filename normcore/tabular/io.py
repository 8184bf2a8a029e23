"""Reading and writing user tables safely.

Reading: size limits (uploaded content 200 MiB; a file on this machine, what its memory allows), parse errors
turned into one-line messages, and the two spreadsheet-export habits that otherwise shift or hide data: a
delimiter at the end of every row (read as an extra, empty field, not as a row index that shifts every column by
one) and semicolon-separated tables with decimal commas (read as numbers). What was recognised is listed in
``df.attrs["read_notes"]`` for the caller to show.

Writing: CSV cells and headers that a spreadsheet would run as a formula (starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return) are prefixed with a single quote (the OWASP advice against CSV
injection); numbers are never touched.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from normcore._utils.atomic import write_atomic
from normcore._utils.errors import InputError

MAX_TABLE_BYTES = 200 * 1024 * 1024
"""The size limit of uploaded content (bytes or a stream: what a browser sends), and the least limit of a file."""
MEMORY_PER_TABLE_BYTE = 12
"""A file on this machine may use at most this share (1/12) of the memory available when it is read: reading and
scoring a table takes several times its size in memory (measured in BENCHMARKS.md, 2026-12-06)."""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+(?:[eE][-+]?\d+)?\s*$")


def available_memory() -> int | None:
    """Bytes of memory available to new work now (Linux MemAvailable, else the free pages), None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def local_table_limit() -> int:
    """The size limit of a table file on this machine: 1/``MEMORY_PER_TABLE_BYTE`` of the available memory, at
    least ``MAX_TABLE_BYTES`` (which is also the limit where the memory is unknown)."""
    memory = available_memory()
    return max(MAX_TABLE_BYTES, (memory or 0) // MEMORY_PER_TABLE_BYTE)


def read_table(source: str | Path | BinaryIO | bytes, name: str | None = None,
               max_bytes: int | None = None) -> pd.DataFrame:
    """Read a CSV (comma, semicolon or tab separated) into a data frame.

    ``max_bytes`` caps the size: by default ``MAX_TABLE_BYTES`` for bytes and streams (uploads), and
    :func:`local_table_limit` for a path (a file the user named on their own machine, e.g. a UK Biobank-sized
    cohort). Raises :class:`InputError` naming the file for a missing, empty, oversized or unparsable file.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "uploaded file")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{label}: file not found")
        size, limit = path.stat().st_size, max_bytes or local_table_limit()
        if size > limit:
            raise InputError(f"{label}: file is {size / 2**20:.0f} MiB, over the {limit / 2**20:.0f} MiB limit"
                             + ("" if max_bytes else f" (1/{MEMORY_PER_TABLE_BYTE} of the memory available now: "
                                "reading and scoring a table takes several times its size); score it in parts"))
        raw = path.read_bytes()
    elif isinstance(source, bytes):
        raw = source
        max_bytes = max_bytes or MAX_TABLE_BYTES
    else:
        max_bytes = max_bytes or MAX_TABLE_BYTES
        raw = source.read(max_bytes + 1)
    if max_bytes and len(raw) > max_bytes:
        raise InputError(f"{label}: file is over the {max_bytes / 2**20:.0f} MiB limit")
    if not raw.strip():
        raise InputError(f"{label}: file is empty")
    if raw.startswith(b"PK\x03\x04") or raw.startswith(bytes.fromhex("d0cf11e0a1b11ae1")):
        kind = "an Excel workbook (.xlsx)" if raw.startswith(b"PK") else "an Excel 97-2003 workbook (.xls)"
        raise InputError(f"{label}: {kind}, not a CSV table; in Excel use File > Save As > CSV UTF-8, then upload "
                         "the .csv file")
    sep = _sniff_separator(raw[:65536].decode("utf-8", errors="replace"))
    notes: list[str] = []
    try:
        # index_col=False: rows with one field more than the header (a trailing delimiter) are not read
        # with their first field as an index, which would shift every column by one
        df = pd.read_csv(io.BytesIO(raw), sep=sep, encoding="utf-8-sig", low_memory=False, index_col=False)
        if sep == ";" and _has_decimal_commas(df):
            df = pd.read_csv(io.BytesIO(raw), sep=sep, encoding="utf-8-sig", low_memory=False, index_col=False,
                             decimal=",")
            notes.append("semicolon-separated with decimal commas (a European spreadsheet export): numbers "
                         "such as 1,5 were read as 1.5")
    except UnicodeDecodeError:
        raise InputError(f"{label}: not UTF-8 text; save the table as a UTF-8 CSV") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{label}: not a readable CSV table ({first})") from None
    trailing = [c for c in df.columns if str(c).startswith("Unnamed:") and df[c].isna().all()]
    if trailing or _rows_end_in_delimiter(raw, sep):
        df = df.drop(columns=trailing)
        notes.append("rows end in a delimiter (a spreadsheet export habit): the empty last field was ignored")
    if df.shape[1] < 2:
        raise InputError(f"{label}: found {df.shape[1]} column; expected a table with a header row "
                         "and comma-, semicolon- or tab-separated columns")
    if df.empty:
        raise InputError(f"{label}: the table has a header but no rows")
    header = next(csv.reader([raw.decode("utf-8-sig", errors="replace").splitlines()[0]], delimiter=sep))
    names = pd.Index([h.strip() for h in header if h.strip() or not trailing])
    dupes = names[names.duplicated()].tolist()
    df.columns = [str(c).strip() for c in df.columns]
    if dupes:
        raise InputError(f"{label}: duplicate column names {dupes[:5]}")
    df.attrs["read_notes"] = notes
    return df


def _has_decimal_commas(df: pd.DataFrame) -> bool:
    """Whether text columns of a semicolon table are mostly numbers written with a decimal comma."""
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    for col in text:
        values = df[col].dropna().astype(str)
        if len(values) and values.map(lambda v: bool(_DECIMAL_COMMA.match(v))).mean() > 0.5:
            return True
    return False


def _rows_end_in_delimiter(raw: bytes, sep: str) -> bool:
    """Whether (almost) every data row ends with the delimiter while the header does not."""
    lines = [ln for ln in raw[:65536].decode("utf-8", errors="replace").splitlines() if ln.strip()]
    rows = lines[1:-1] if len(lines) > 2 else lines[1:]  # the last line of the sample may be cut
    return bool(rows) and not lines[0].rstrip().endswith(sep) and all(r.rstrip().endswith(sep) for r in rows)


def _sniff_separator(head: str) -> str:
    first = head.splitlines()[0] if head else ""
    counts = {sep: first.count(sep) for sep in (",", ";", "\t")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def escape_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names cannot run as spreadsheet formulas.

    Text starting with one of :data:`FORMULA_STARTS` gets a leading single quote; numeric columns and
    other text are unchanged.
    """
    def safe(value):
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    out = df.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = out[col].map(safe)
    out.columns = [safe(str(c)) for c in out.columns]
    return out


def table_csv_bytes(df: pd.DataFrame) -> bytes:
    """The CSV text of ``df`` (no index, formulas escaped) as UTF-8 bytes: what downloads offer."""
    return escape_formulas(df).to_csv(index=False).encode()


def write_table_atomic(df: pd.DataFrame, path: str | Path) -> None:
    """Write a CSV atomically (the file at ``path`` is the old one or the complete new one, never half),
    with formula-like text escaped (:func:`escape_formulas`)."""
    safe = escape_formulas(df)
    write_atomic(path, lambda tmp: safe.to_csv(tmp, index=False))
