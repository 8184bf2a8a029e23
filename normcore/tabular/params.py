"""Ranges of the tabular models' parameters, checked before any work (fit, load, score).

Each model type lists a rule per parameter (:attr:`NormativeModel.PARAM_RULES`); a rule returns ``None``
for an acceptable value or the phrase saying what is expected. :func:`check_params` turns the first
violation into an :class:`~normcore._utils.errors.InputError` naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np

from normcore._utils.errors import InputError

Rule = Callable[[object], str | None]

MIN_TIMESTEPS = 100
"""Shortest diffusion chain accepted: samplers respace it to ``sampling_steps`` (default 25), and a chain of a
handful of steps gives far too wide deviations (T = 1 was measured at z SD 2.75). 100 is the shortest length
the test suite exercises; nothing shorter has been validated."""


def integer(lo: int, hi: int | None = None) -> Rule:
    def rule(v):
        ok = isinstance(v, Integral) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
        return None if ok else f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
    return rule


def number(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Rule:
    def rule(v):
        ok = isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))
        ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        return None if ok else f"a finite number in {left}{lo:g}, {hi:g}{right}"
    return rule


def choice(*options: object) -> Rule:
    def rule(v):
        return None if v in options else f"one of {', '.join(map(repr, options))}"
    return rule


def optional(inner: Rule) -> Rule:
    def rule(v):
        return None if v is None else inner(v)
    return rule


def boolean(v) -> str | None:
    return None if isinstance(v, bool) else "True or False"


def names(v) -> str | None:
    """A list of distinct column names (strings)."""
    ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) and x for x in v) and len(set(v)) == len(v)
    return None if ok else "a list of distinct column names"


def check_params(name: str, params: dict, rules: dict[str, Rule]) -> None:
    """Raise :class:`InputError` for the first parameter outside its rule."""
    for key, rule in rules.items():
        if key in params:
            expected = rule(params[key])
            if expected:
                raise InputError(f"{name}: {key}={params[key]!r} is not accepted; expected {expected}")


def check_count(value: int | None, what: str) -> None:
    """A sample count given at call time: ``None`` (the model's default) or an integer >= 1."""
    if value is not None and integer(1)(value):
        raise InputError(f"{what} must be an integer >= 1, not {value!r}")


def check_seed(value: int | None) -> None:
    if value is not None and integer(0, 2**32 - 1)(value):
        raise InputError(f"seed must be an integer in 0..{2**32 - 1}, not {value!r}")


def checked_quantiles(quantiles) -> np.ndarray:
    """Quantile levels given at call time as a float array: at least one, each strictly between 0 and 1."""
    q = np.asarray(quantiles, float)
    if q.size == 0 or (q <= 0).any() or (q >= 1).any():
        raise InputError("quantiles must lie strictly between 0 and 1")
    return q
