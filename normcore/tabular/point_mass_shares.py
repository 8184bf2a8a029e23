"""How likely a value is to sit at its measure's floor or at its ceiling, given age and the categorical covariates.

A measure with a point mass (:mod:`~normcore.tabular.point_masses`) has, at each covariate point, a probability of
its floor, of its ceiling and of the body between them. :class:`PointMassShares` models them by a multinomial
logistic regression (the body the reference outcome) on a cubic B-spline basis of age and one-hot level effects,
as GAMLSS's zero-adjusted families model their point mass through a logit link. The coefficients (not the
intercepts) carry a quadratic penalty (second differences of the age basis's coefficients, a ridge on the level
effects: :func:`penalty_structure`) whose weight is chosen per measure from ``PENALTIES`` by ``FOLDS``-fold
cross-validated log loss,
so a floor most subjects share, or a rare one (10 of 862 fcon1000 subjects have a 5th ventricle), is not
overfitted across two dozen sites. A level the regression never saw (a site added by adaptation, or one left free
to be marginalised) gets the mixture of the training levels' probabilities, weighted by their training
frequencies.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from normcore.tabular.covariates import expand_levels, level_effects

PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Candidate L2 penalties, per unit of the mean log loss (their coefficients' sum of squares times half this)."""
FOLDS = 5
"""Cross-validation folds for the penalty (fewer when an outcome has fewer rows)."""


def _design(spline: np.ndarray, codes: np.ndarray, n_levels: list[int]) -> np.ndarray:
    """(n, S + sum(n_levels - 1)): the age basis, then each covariate's one-hot level effects (level 0: none)."""
    return np.concatenate([spline, *(level_effects(codes[:, k], n_lv) for k, n_lv in enumerate(n_levels))], axis=1)


def _log_probabilities(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """(n, C) log probabilities of the C outcomes; ``coef`` (1 + p, C - 1): intercept row first, outcome 0 the
    reference (its linear predictor 0)."""
    eta = np.concatenate([np.zeros((len(x), 1)), coef[0] + x @ coef[1:]], axis=1)
    return eta - special.logsumexp(eta, axis=1, keepdims=True)


def penalty_structure(n_spline: int, n_columns: int) -> np.ndarray:
    """(p, p) quadratic penalty of the coefficients of :func:`_design`'s columns: the second differences of the
    age basis's coefficients (a P-spline: a strong penalty leaves a logit linear in age, not a flat one), and a
    ridge on the level effects."""
    out = np.eye(n_columns)
    if n_spline >= 3:
        diff = np.diff(np.eye(n_spline), n=2, axis=0)
        out[:n_spline, :n_spline] = diff.T @ diff
    return out


def _fit(x: np.ndarray, outcome: np.ndarray, n_outcomes: int, penalty: float,
         structure: np.ndarray | None = None) -> np.ndarray:
    """Penalised maximum likelihood coefficients (1 + p, C - 1) by Newton steps in a trust region with the exact
    gradient and Hessian; the penalty is ``penalty`` times c' ``structure`` c for each outcome's coefficients c
    (default: a ridge), not the intercepts."""
    n, p = x.shape
    structure = np.eye(p) if structure is None else structure
    target = np.zeros((n, n_outcomes))
    target[np.arange(n), outcome] = 1.0
    shares = target.mean(axis=0)
    start = np.zeros((1 + p, n_outcomes - 1))
    start[0] = np.log(shares[1:]) - np.log(shares[0])  # the intercepts of the overall shares

    k = n_outcomes - 1
    with_intercept = np.column_stack([np.ones(n), x])
    penalty_hessian = np.zeros((1 + p, k, 1 + p, k))  # the penalty's curvature, per outcome, intercepts free
    for o in range(k):
        penalty_hessian[1:, o, 1:, o] = penalty * structure
    penalty_hessian = penalty_hessian.reshape((1 + p) * k, (1 + p) * k)

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        coef = flat.reshape(start.shape)
        log_p = _log_probabilities(x, coef)
        resid = (np.exp(log_p) - target)[:, 1:] / n
        pulled = structure @ coef[1:]
        grad = np.concatenate([resid.sum(axis=0, keepdims=True), x.T @ resid + penalty * pulled])
        return float(-(target * log_p).sum() / n + 0.5 * penalty * (coef[1:] * pulled).sum()), grad.ravel()

    def hessian(flat: np.ndarray) -> np.ndarray:
        prob = np.exp(_log_probabilities(x, flat.reshape(start.shape)))[:, 1:]  # (n, K)
        weight = prob[:, :, None] * (np.eye(k)[None] - prob[:, None, :])  # (n, K, K): the multinomial's curvature
        data = np.einsum("ia,ikl,ib->akbl", with_intercept, weight, with_intercept) / n
        return data.reshape((1 + p) * k, (1 + p) * k) + penalty_hessian

    # Newton steps in a trust region: the problem is convex and small, and L-BFGS crawled along the penalty's
    # flat directions (the second differences leave a straight line in age free)
    return optimize.minimize(loss, start.ravel(), jac=True, hess=hessian, method="trust-exact").x.reshape(start.shape)


def _folds(outcome: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Each row's fold, stratified: every outcome's rows dealt in turn to the folds in a seeded random order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(outcome), dtype=np.int64)
    for value in np.unique(outcome):
        rows = rng.permutation(np.flatnonzero(outcome == value))
        fold[rows] = np.arange(len(rows)) % n_folds
    return fold


def choose_penalty(x: np.ndarray, outcome: np.ndarray, n_outcomes: int, seed: int,
                   structure: np.ndarray | None = None) -> float:
    """The penalty of ``PENALTIES`` with the lowest cross-validated log loss (ties: the larger penalty)."""
    n_folds = int(min(FOLDS, np.bincount(outcome, minlength=n_outcomes).min()))
    if n_folds < 2:
        return PENALTIES[-1]
    fold = _folds(outcome, n_folds, seed)
    losses = []
    for penalty in PENALTIES:
        total = 0.0
        for f in range(n_folds):
            train, test = fold != f, fold == f
            coef = _fit(x[train], outcome[train], n_outcomes, penalty, structure)
            total -= _log_probabilities(x[test], coef)[np.arange(test.sum()), outcome[test]].sum()
        losses.append(total)
    best = min(losses)
    return max(p for p, loss in zip(PENALTIES, losses, strict=True) if loss <= best * (1 + 1e-9))


class PointMassShares:
    """Per measure with a floor or a ceiling: the probabilities (n, D, 2) of sitting at the floor and at the ceiling
    at each row's age and levels (0 for measures and sides without one)."""

    def __init__(self) -> None:
        self.n_levels: list[int] = []
        self.frequencies: list[list[float]] = []  # per covariate: its training levels' shares of the rows
        self.columns: dict[int, dict] = {}  # measure -> {"sides": outcomes 1.. as "floor"/"ceiling", "coef", "penalty"}
        self.n_columns = 0

    def fit(self, spline: np.ndarray, codes: np.ndarray, n_levels: list[int], at_floor: np.ndarray,
            at_ceiling: np.ndarray, observed: np.ndarray | None = None, seed: int = 0) -> PointMassShares:
        """``spline`` (n, S): the rows' age basis; ``codes`` (n, K): their levels of covariates with ``n_levels``;
        ``at_floor`` / ``at_ceiling`` (n, D): which values sit at their measure's floor or ceiling. Each measure
        with either is regressed on the rows where ``observed`` (n, D; default all) holds."""
        observed = np.ones(at_floor.shape, bool) if observed is None else observed
        self.n_levels = [int(n) for n in n_levels]
        self.frequencies = [(np.bincount(codes[:, k], minlength=n) / len(codes)).tolist()
                            for k, n in enumerate(self.n_levels)]
        self.n_columns = at_floor.shape[1]
        x = _design(spline, codes, self.n_levels)
        structure = penalty_structure(spline.shape[1], x.shape[1])
        for j in np.flatnonzero(at_floor.any(axis=0) | at_ceiling.any(axis=0)):
            rows = observed[:, j]
            sides = [s for s, mask in (("floor", at_floor), ("ceiling", at_ceiling)) if mask[rows, j].any()]
            outcome = np.zeros(int(rows.sum()), dtype=np.int64)
            for i, side in enumerate(sides, start=1):
                outcome[(at_floor if side == "floor" else at_ceiling)[rows, j]] = i
            penalty = choose_penalty(x[rows], outcome, 1 + len(sides), seed + int(j), structure)
            coef = _fit(x[rows], outcome, 1 + len(sides), penalty, structure)
            self.columns[int(j)] = {"sides": sides, "coef": coef.tolist(), "penalty": penalty}
        return self

    def predict(self, spline: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(n, D, 2) probabilities of the floor and of the ceiling; a code outside the training levels (negative,
        or a level added later) is a mixture over the training levels by their frequencies."""
        out = np.zeros((len(spline), self.n_columns, 2))
        if not self.columns:
            return out
        for sub_codes, weight in self._resolved(codes):
            x = _design(spline, sub_codes, self.n_levels)
            for j, fit in self.columns.items():
                prob = np.exp(_log_probabilities(x, np.asarray(fit["coef"])))
                for i, side in enumerate(fit["sides"], start=1):
                    out[:, j, 0 if side == "floor" else 1] += weight * prob[:, i]
        return out

    def _resolved(self, codes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(codes within the training levels, each row's weight) pairs whose weighted sum is the mixture."""
        return expand_levels(codes, self.frequencies,
                             lambda k, column: (column < 0) | (column >= self.n_levels[k]))

    def to_dict(self) -> dict:
        return {"n_levels": self.n_levels, "frequencies": self.frequencies, "n_columns": self.n_columns,
                "columns": {str(j): fit for j, fit in self.columns.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> PointMassShares:
        out = cls()
        out.n_levels, out.frequencies, out.n_columns = d["n_levels"], d["frequencies"], d["n_columns"]
        out.columns = {int(j): fit for j, fit in d["columns"].items()}
        return out
