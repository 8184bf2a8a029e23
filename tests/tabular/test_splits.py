"""The held-out split that keeps every covariate level among the fitted rows."""

import numpy as np
import pandas as pd

from normcore.tabular.splits import held_out_split


def test_only_rows_whose_level_would_be_held_out_alone_move():
    n = 200
    rng = np.random.default_rng(5)
    data = pd.DataFrame({"site": rng.choice(["a", "b", "c"], n), "sex": rng.choice(["F", "M"], n)})
    plain = np.random.default_rng(1).permutation(n)
    fitted, held = held_out_split(data, ["site", "sex"], 0.25, np.random.default_rng(1))
    assert np.array_equal(held, plain[:50]) and np.array_equal(fitted, plain[50:])  # every level fits: unchanged
    singles = plain[:3]  # three one-row sites, all drawn to be held out
    data.loc[singles, "site"] = ["x", "y", "z"]
    fitted, held = held_out_split(data, ["site", "sex"], 0.25, np.random.default_rng(1))
    assert set(singles) <= set(fitted) and len(held) == 47 and sorted([*fitted, *held]) == list(range(n))


def test_at_least_one_row_is_held_out_unless_none_is_asked_for():
    tiny = pd.DataFrame({"site": ["p", "q", "r", "r"]})  # the moves would hold out nothing: a shared-level row
    fitted, held = held_out_split(tiny, ["site"], 0.25, np.random.default_rng(0))
    assert len(held) == 1 and tiny["site"].iloc[held[0]] == "r" and set(tiny["site"].iloc[fitted]) == {"p", "q", "r"}
    fitted, held = held_out_split(tiny, ["site"], 0.0, np.random.default_rng(0), at_least_one=False)
    assert len(held) == 0 and sorted(fitted) == [0, 1, 2, 3]
