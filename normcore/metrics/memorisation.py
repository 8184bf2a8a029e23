"""Memorisation: are generated rows closer to training subjects than to unseen ones?"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def memorisation_report(generated: np.ndarray, train: np.ndarray, holdout: np.ndarray,
                        duplicate_tol: float = 1e-6) -> dict[str, float]:
    """Nearest-neighbour distances (covariates included as columns) of generated rows.

    Columns are standardised with the training rows. ``ratio`` = median distance to training / median
    distance to holdout, after subsampling the larger reference set to the size of the smaller so both
    are equally dense (~1 for a model that does not copy; << 1 for one that does). ``share_closer_to_train``
    is the share of generated rows whose nearest training row is nearer than their nearest holdout row
    (~0.5 without memorisation); ``near_duplicates`` the share within ``duplicate_tol`` of a training row.
    """
    train, holdout, generated = (np.asarray(a, float) for a in (train, holdout, generated))
    mu, sd = train.mean(0), train.std(0)
    sd[sd == 0] = 1
    t, h, g = (train - mu) / sd, (holdout - mu) / sd, (generated - mu) / sd
    rng = np.random.default_rng(0)
    n = min(len(t), len(h))
    t_eq, h_eq = t[rng.permutation(len(t))[:n]], h[rng.permutation(len(h))[:n]]
    d_train = NearestNeighbors(n_neighbors=1).fit(t_eq).kneighbors(g)[0][:, 0]
    d_hold = NearestNeighbors(n_neighbors=1).fit(h_eq).kneighbors(g)[0][:, 0]
    d_all_train = NearestNeighbors(n_neighbors=1).fit(t).kneighbors(g)[0][:, 0]
    return {"median_nn_train": float(np.median(d_train)), "median_nn_holdout": float(np.median(d_hold)),
            "ratio": float(np.median(d_train) / max(np.median(d_hold), 1e-12)),
            "share_closer_to_train": float(np.mean(d_train < d_hold)),
            "near_duplicates": float(np.mean(d_all_train < duplicate_tol))}
