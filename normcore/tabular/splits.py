"""Random splits of a table into rows that fit a model and rows held out from it, keeping every level known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normcore.tabular.covariates import category_label


def held_out_split(data: pd.DataFrame, covariates: list[str], fraction: float, rng: np.random.Generator,
                   at_least_one: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(fitted rows, held-out rows) of ``data``, by position: a random ``fraction`` of the rows (at least one if
    ``at_least_one``) is held out, except that no level of a categorical covariate is held out alone. The first row of
    such a level (in the random order) is fitted instead, so the model learns every level of the table it is given (a
    site of one subject) and that table can be scored. Where every level keeps a fitted row the split is the plain
    random one (one permutation drawn from ``rng``, its first rows held out); if the moves would leave no held-out row
    where one is asked for, the first fitted row whose levels all keep another fitted row is held out.

    Used for a diffusion model's validation split and the dashboard's held-out calibration check."""
    order = rng.permutation(len(data))
    n_held = int(round(fraction * len(data)))
    held = np.zeros(len(data), bool)
    held[order[:max(n_held, 1) if at_least_one else n_held]] = True
    labels = [data[c].map(category_label).to_numpy() for c in covariates]
    for lab in labels:
        held_rows = order[held[order]]  # held-out rows in the random order
        alone = ~np.isin(lab[held_rows], lab[~held])
        _, first = np.unique(lab[held_rows][alone], return_index=True)
        held[held_rows[np.flatnonzero(alone)[first]]] = False
    if at_least_one and not held.any():
        for i in order:
            if all((lab[~held] == lab[i]).sum() > 1 for lab in labels):
                held[i] = True
                break
    return order[~held[order]], order[held[order]]
