"""Parsers of the command line's own value syntaxes (lists, COL=VALUE, START:STOP:STEP) and checks of its
output paths."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from normcore._utils.errors import InputError
from normcore.persistence import check_writable_parent

MAX_AGES = 10000


def csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def float_list(value: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in csv_list(value)]
    except ValueError:
        raise InputError(f"{flag} {value!r}: expected comma-separated numbers") from None


def json_object(value: str | None, flag: str) -> dict:
    """A flag holding a JSON object (``{}`` when absent)."""
    try:
        parsed = json.loads(value) if value else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"{flag} is not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise InputError(f"{flag} must be a JSON object")
    return parsed


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set COL=VALUE`` items as a dict."""
    fixed = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set {item!r}: expected COL=VALUE")
        key, value = item.split("=", 1)
        fixed[key.strip()] = value.strip()
    return fixed


def age_grid(spec: str) -> np.ndarray:
    """Parse ``--ages START:STOP:STEP`` (inclusive of STOP when it falls on the grid)."""
    try:
        start, stop, step = (float(p) for p in spec.split(":"))
    except ValueError:
        raise InputError(f"--ages {spec!r}: expected START:STOP:STEP, e.g. 20:90:1") from None
    if step <= 0 or stop < start:
        raise InputError(f"--ages {spec!r}: need STOP >= START and STEP > 0")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    if n > MAX_AGES:
        raise InputError(f"--ages {spec!r}: {n} ages is too many (max {MAX_AGES})")
    return start + step * np.arange(n)


def int_at_least(lo: int, hi: int | None = None):
    """An argparse type: an integer >= ``lo`` (and <= ``hi``); anything else is refused by argparse (exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range (expected {lo}"
                                             + (f"..{hi})" if hi is not None else " or more)"))
        return value
    parse.__name__ = "integer"
    return parse


def float_between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    """An argparse type: a finite number within [lo, hi] (open ends as asked)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open
                                                                                      else value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"{text} is out of range (expected {'(' if lo_open else '['}{lo:g}, "
                                             f"{hi:g}{')' if hi_open else ']'})")
        return value
    parse.__name__ = "number"
    return parse


SEED = int_at_least(0, 2**32 - 1)
COUNT = int_at_least(1)


def check_output_file(out: str, flag: str = "--out", inputs: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output file that cannot be written or would overwrite an input."""
    path = Path(out)
    if path.is_dir():
        raise InputError(f"{flag} {out}: is a folder; name a file to write")
    for source in inputs:
        if source and Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise InputError(f"{flag} {out}: is the input table {source}; write the result to a new file")
    check_writable_parent(path, flag)
