"""The location-scale stage, fitted on training data only: each IDP standardised by a smooth conditional location
and scale of age and categorical covariates (:class:`LocationScale`), before the Gaussianisation."""

from __future__ import annotations

import numpy as np

from normcore.tabular.covariates import level_effects

_SINGLE_AGE_SPAN = 1e-6  # years: the nominal age range of a cohort whose subjects all have one age
_WEAK_SUPPORT = 10.0  # a spline column whose Gram diagonal is under this many ridges is barely informed by the rows


def _leave_one_out_residual(target: np.ndarray, fitted: np.ndarray, hat: np.ndarray) -> np.ndarray:
    """Each row's residual from the linear smoother (hat-matrix diagonal ``hat``) refitted without it:
    (t_i - f_i) / (1 - h_ii); so t_i minus it is the row's leave-one-out prediction."""
    return (target - fitted) / np.maximum(1 - hat, 1e-3)[:, None]


def _best_per_column(candidates, fit) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per column, the candidate with the smallest loss (the first on ties). ``fit(candidate)`` returns arrays whose
    last axis is the columns and their (columns,) loss; returns those arrays and losses of each column's best candidate
    and its index in ``candidates``."""
    best = loss = choice = None
    for k, candidate in enumerate(candidates):
        arrays, c_loss = fit(candidate)
        if best is None:
            best, loss, choice = list(arrays), c_loss, np.zeros(len(c_loss), int)
            continue
        better = c_loss < loss
        for kept, new in zip(best, arrays, strict=True):
            kept[..., better] = new[..., better]
        loss[better], choice[better] = c_loss[better], k
    return best, loss, choice


def _ridge(basis: np.ndarray, gram: np.ndarray, target: np.ndarray, penalty: np.ndarray, with_hat: bool = False):
    """Ridge coefficients of ``target`` on ``basis`` (whose Gram matrix is ``gram``) with the penalty ``penalty``
    (a per-column diagonal, or a full symmetric matrix), and, if asked, the diagonal of the hat matrix."""
    inv = np.linalg.inv(gram + (penalty if penalty.ndim == 2 else np.diag(penalty)))
    coef = inv @ (basis.T @ target)
    if not with_hat:
        return coef
    return coef, ((basis @ inv) * basis).sum(axis=1)


class _LevelCurveRidge:
    """Ridge fits on ``[basis, level curves]`` for one covariate whose levels get their own age curves: the curve
    columns of a level (its rows' B-spline basis, ``spline``, S columns) touch only that level's rows, so their Gram
    matrix is block-diagonal (K blocks of S x S) and the system is solved through its Schur complement on the m basis
    columns: O(n m^2 + K S^3) a penalty instead of O(n (m + K S)^2) (at 300 sites, 75x fewer operations), and the
    curves are never held as a dense n x K S matrix. Equal to :func:`_ridge` on the dense matrix up to rounding.

    ``level``: each row's level (negative or >= ``n_levels``: no level, no curve)."""

    def __init__(self, basis: np.ndarray, spline: np.ndarray, level: np.ndarray, n_levels: int):
        from scipy import sparse

        n, self.n_spline = spline.shape
        self.basis = basis
        ok = (level >= 0) & (level < n_levels)
        self.rows, self.level = np.flatnonzero(ok), level[ok]
        self.row_spline = sp = spline[self.rows]  # the spline values of the rows that have a level
        cols = self.level[:, None] * self.n_spline + np.arange(self.n_spline)
        self.curve = sparse.csr_matrix((sp.ravel(), (np.repeat(self.rows, self.n_spline), cols.ravel())),
                                       shape=(n, n_levels * self.n_spline))
        self.blocks = np.zeros((n_levels, self.n_spline, self.n_spline))  # the curves' Gram blocks
        np.add.at(self.blocks, self.level, sp[:, :, None] * sp[:, None, :])
        self.cross = np.asarray((self.curve.T @ basis).T).reshape(basis.shape[1], n_levels, self.n_spline)  # G12
        self.gram = basis.T @ basis
        order = np.argsort(self.level, kind="stable")
        bounds = np.searchsorted(self.level[order], np.arange(n_levels + 1))
        self.by_level = [(k, order[bounds[k]:bounds[k + 1]]) for k in range(n_levels) if bounds[k + 1] > bounds[k]]
        self.unit = float(np.mean(np.einsum("kss->ks", self.blocks)))  # the curve columns' mean Gram diagonal

    def solve(self, main_penalty: np.ndarray, curve_penalty: float, target: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(coefficients: the basis's rows, then the curves' level-major; fitted values; hat-matrix diagonal) of the
        ridge with ``main_penalty`` (m x m) on the basis columns and ``curve_penalty`` on every curve column."""
        m, (n_levels, s) = self.basis.shape[1], self.blocks.shape[:2]
        h_inv = np.linalg.inv(self.blocks + curve_penalty * np.eye(s))  # (K, S, S)
        cross_h = np.einsum("mks,kst->mkt", self.cross, h_inv)  # G12 H^-1
        schur = self.gram + main_penalty - cross_h.reshape(m, -1) @ self.cross.reshape(m, -1).T
        s_inv = np.linalg.inv(schur)
        r_main = self.basis.T @ target
        r_curve = np.asarray(self.curve.T @ target).reshape(n_levels, s, -1)
        coef_main = s_inv @ (r_main - np.einsum("mks,ksq->mq", cross_h, r_curve))
        coef_curve = np.einsum("kst,ktq->ksq", h_inv, r_curve - np.einsum("mks,mq->ksq", self.cross, coef_main))
        coef = np.vstack([coef_main, coef_curve.reshape(n_levels * s, -1)])
        fitted = self.basis @ coef_main + np.asarray(self.curve @ coef_curve.reshape(n_levels * s, -1))
        # hat: for a row of level k with basis row x and spline row c, w = H_k^-1 c, v = x - G12_k w, h = v'S^-1 v + c'w
        sp = self.row_spline
        w = np.einsum("nst,nt->ns", h_inv[self.level], sp)
        v = self.basis.copy()
        for k, part in self.by_level:  # positions in self.rows of level k's rows
            v[self.rows[part]] -= w[part] @ self.cross[:, k, :].T
        hat = ((v @ s_inv) * v).sum(axis=1)
        hat[self.rows] += (sp * w).sum(axis=1)
        return coef, fitted, hat


class LocationScale:
    """Per-IDP conditional location and scale: y -> (y - mu(c)) / sigma(c), fitted on training data.

    mu is a ridge regression on a cubic B-spline basis of age (interior knots at age quantiles) and categorical
    effects, its age curve also penalised
    for roughness (the integral of its squared second derivative) by a weight chosen per IDP from
    :attr:`SMOOTHING` by exact leave-one-out error (weight 0, the ridge alone, included: a curve is smoothed only
    where that predicts left-out subjects better, as with few or age-skewed subjects); log sigma^2 is a
    ridge regression of log squared residuals on the same basis (age clamped to the training range), its age curve
    penalised for roughness alike, by a weight chosen per IDP from :attr:`SCALE_SMOOTHING` by the leave-one-out
    scales' Gaussian log score, and rescaled so the standardised residuals have unit variance. For fixed
    covariates the map is an increasing affine function of y, so centiles and ranks map back exactly. The diffusion
    model then learns everything this simple model misses (shape, skew, multimodality, dependence).

    ``curves`` names covariates (by their column in ``codes``) whose levels also get their own age curve of the
    location: a deviation from the common curve on the same B-spline basis (age clamped) for every level,
    shrunk towards zero by a ridge penalty chosen per IDP by exact leave-one-out error from
    :attr:`CURVE_PENALTIES` (or no curves, when none of them predicts better). A batch covariate needs them: the
    network, which does not see it, cannot correct a location whose age trend differs between its levels
    (a site that scales an age-dependent mean). Deviations of every level are penalised alike, so they average
    to about zero and a level without data (a new site) gets the common curve.

    Beyond the training ages the location and the scale stay at their values at the nearer edge. (The basis's linear
    extrapolation column is zero on every training row, so its coefficient is always 0; it keeps saved coefficient
    matrices' rows.) A straight continuation of the location's edge chord was measured and is not used: on fcon1000
    it made scores beyond the oldest training age worse (BENCHMARKS.md, forty-first session).
    """

    CURVE_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # x the mean diagonal of the curve columns' Gram matrix
    # x (the spline columns' Gram trace / the roughness matrix's trace); 0: the ridge alone
    SMOOTHING = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
    SCALE_SMOOTHING = SMOOTHING  # the log variance's candidate roughness weights, in the same units

    def __init__(self, n_knots: int = 4, ridge: float = 1e-3, curves: list[int] | tuple[int, ...] = ()):
        self.n_knots = n_knots
        self.ridge = ridge
        self.curves = [int(k) for k in curves]
        self.knots: list[float] = []
        self.age_lo = 0.0
        self.age_hi = 1.0
        self.n_levels: list[int] = []
        self.mu_coef: list[list[float]] = []  # rows: the basis of _basis, then those of _curve_basis
        self.logvar_coef: list[list[float]] = []  # rows: the basis of _basis
        self.curve_penalty: list[float | None] = []  # per IDP: the chosen penalty (None: no level curves)
        self.smoothing: list[float] = []  # per IDP: the chosen roughness weight (empty: a stage saved before them)
        self.scale_smoothing: list[float] = []  # per IDP: the log variance's roughness weight (empty: saved before)

    def _spline(self, age: np.ndarray) -> np.ndarray:
        from scipy.interpolate import BSpline

        # the oldest training age is evaluated from just below: where the top interior knot equals it (integer ages,
        # a third of the rows or more at the oldest), scipy's basis is all zeros at the knot vector's very end
        a = np.clip(np.asarray(age, float), self.age_lo, np.nextafter(self.age_hi, -np.inf))
        t = np.r_[[self.age_lo] * 4, self.knots, [self.age_hi] * 4]
        return BSpline.design_matrix(a, t, 3, extrapolate=False).toarray()

    def age_basis(self, age: np.ndarray) -> np.ndarray:
        """(n, S) the cubic B-spline basis of age the stage's curves are built on (ages clamped to the training
        range), for other regressions on the same ages."""
        return self._spline(age)

    def _roughness(self, n_grid: int = 400) -> np.ndarray:
        """(S, S) integral over the training ages of the products of the spline columns' second derivatives, by
        second differences on a fine grid (exact up to O(h^2), and defined where knots repeat)."""
        x = np.linspace(self.age_lo, self.age_hi, n_grid)
        h = x[1] - x[0]
        spline = self._spline(x)
        d2 = (spline[2:] - 2 * spline[1:-1] + spline[:-2]) / h**2
        return d2.T @ d2 * h

    def _basis(self, age: np.ndarray, codes: np.ndarray, extrapolate: bool,
               without_level_effect: int | None = None) -> np.ndarray:
        """Common age curve, linear extrapolation term (zero unless ``extrapolate``) and one-hot level effects
        (those of covariate ``without_level_effect`` left at zero)."""
        lo, hi = self.age_lo, self.age_hi
        a = np.clip(np.asarray(age, float), lo, hi)
        parts = [self._spline(age)]
        lin = (np.asarray(age, float) - a) / (hi - lo) if extrapolate else np.zeros(len(a))
        parts.append(lin[:, None])
        for k, n_lv in enumerate(self.n_levels):
            onehot = level_effects(codes[:, k], n_lv)
            parts.append(onehot if k != without_level_effect else np.zeros_like(onehot))
        return np.concatenate(parts, axis=1)

    def _curve_basis(self, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The level curves' columns: for each covariate of ``curves``, level-major, the B-spline basis of age
        on the rows of that level (zero on rows whose code is negative: no level)."""
        spline = self._spline(age)
        parts = []
        for k in self.curves:
            block = np.zeros((len(spline), self.n_levels[k], spline.shape[1]))
            rows = np.flatnonzero((codes[:, k] >= 0) & (codes[:, k] < self.n_levels[k]))
            block[rows, codes[rows, k]] = spline[rows]
            parts.append(block.reshape(len(spline), -1))
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(spline), 0))

    def _location_basis(self, age: np.ndarray, codes: np.ndarray, without_level_effect: int | None = None):
        return np.concatenate([self._basis(age, codes, True, without_level_effect),
                               self._curve_basis(age, codes)], axis=1)

    def fit(self, age: np.ndarray, codes: np.ndarray, y: np.ndarray, n_levels: list[int]) -> LocationScale:
        self.fit_transform(age, codes, y, n_levels)
        return self

    def fit_transform(self, age: np.ndarray, codes: np.ndarray, y: np.ndarray, n_levels: list[int]) -> np.ndarray:
        """Fit, and return the training rows' *leave-one-out* standardised residuals.

        Each row is standardised as a new subject would be, by a fit that did not see it: its location
        residual is the leave-one-out r_i / (1 - h_ii) (h: the ridge hat matrix of mu), and it is divided by
        its leave-one-out scale, the log-variance regression's prediction without the row
        (t_i - (t_i - f_i) / (1 - g_ii), with t the log squared residuals, f their fit and g that regression's
        hat matrix). In-sample residuals are too small by the estimation error of mu, and in-sample scales
        too close to each row's own residual (a large residual widens its own level's scale), most at small
        sites; a model trained on them gives held-out intervals that are too narrow. The stored coefficients
        are the full fit, rescaled so that the full fit's standardised residuals have unit variance; the
        leave-one-out residuals share that rescaling, so they are spread like new subjects' residuals.

        Missing values (NaN in ``y``) are allowed: each IDP is fitted on the rows where it is observed (the age
        knots and range come from every row), as if its column alone had been given those rows, and its residuals
        are NaN where it is missing. A level none of those rows has (a site that never measured the IDP) gets the
        mean effect of the levels that have some (:meth:`_average_unseen_levels`): what is known of a site never
        seen. An IDP without two different observed values keeps location 0 and scale 1, for its caller to replace (a
        point mass's body of one value, or of equal ones: :func:`~normcore.tabular.point_masses.pooled_bodies`).

        Each IDP is fitted in its own standard units (less its mean, over its SD) and the coefficients are stored in
        the IDP's units, so the residuals do not depend on the units the IDP is measured in (mm^3 or cm^3, mm^2/s):
        the ridge penalties and the log variance's ridge would otherwise pull towards a level and a spread of 1 in
        those units (BENCHMARKS.md, forty-eighth session).
        """
        age = np.asarray(age, float)
        raw = np.asarray(y, float)
        degenerate = np.nanmax(raw, axis=0, initial=-np.inf) <= np.nanmin(raw, axis=0, initial=np.inf)
        fitted = ~degenerate  # two different values at least; the others are left to the caller, as unobserved
        kept = np.where(fitted, raw, 0.0)  # each IDP in its standard units (see above)
        centre = np.where(fitted, np.nanmean(kept, axis=0), 0.0)
        spread = np.where(fitted, np.nanstd(kept, axis=0), 1.0)
        y = (np.where(fitted, raw, np.nan) - centre) / spread
        self.age_lo, self.age_hi = float(age.min()), float(max(age.max(), age.min() + _SINGLE_AGE_SPAN))
        probs = np.linspace(0, 1, self.n_knots + 2)[1:-1]
        self.knots = np.unique(np.quantile(age, probs)).tolist()
        self.n_levels = list(n_levels)
        observed = ~np.isnan(y)
        if observed.all():
            mu_coef, lv_coef, out, penalties, (smoothing, scale_smoothing) = self._fit_columns(age, codes, y)
        else:  # each IDP on its observed rows; IDPs observed on the same rows share one solve
            mu_coef = np.zeros((self._location_basis(age[:1], codes[:1]).shape[1], y.shape[1]))
            lv_coef = np.zeros((self._basis(age[:1], codes[:1], False).shape[1], y.shape[1]))
            out, penalties = np.full(y.shape, np.nan), [None] * y.shape[1]
            smoothing, scale_smoothing = [0.0] * y.shape[1], [0.0] * y.shape[1]
            patterns, group = np.unique(observed.T, axis=0, return_inverse=True)
            for g, rows in enumerate(patterns):
                cols = np.flatnonzero(group.ravel() == g)
                if rows.sum() < 2:  # no location and scale to fit (set below)
                    continue
                m, lv, r, pen, (smooth, scale_smooth) = self._fit_columns(age[rows], codes[rows], y[np.ix_(rows, cols)])
                for coef in (m, lv):
                    self._average_unseen_levels(coef, codes[rows])
                mu_coef[:, cols], lv_coef[:, cols] = m, lv
                out[np.ix_(rows, cols)] = r
                for j, value, weight, scale_weight in zip(cols, pen, smooth, scale_smooth, strict=True):
                    penalties[j], smoothing[j], scale_smoothing[j] = value, weight, scale_weight
        self.curve_penalty = penalties if self.curves else []
        self.smoothing = [float(w) for w in smoothing]
        self.scale_smoothing = [float(w) for w in scale_smoothing]
        out[:, degenerate] = raw[:, degenerate]  # location 0, scale 1
        n_spline = len(self.knots) + 4  # B-splines sum to one: a constant added to their coefficients shifts the curve
        mu_coef = mu_coef * spread
        mu_coef[:n_spline] += centre
        lv_coef[:n_spline] += 2 * np.log(spread)
        self.mu_coef, self.logvar_coef = mu_coef.tolist(), lv_coef.tolist()
        return out

    def _average_unseen_levels(self, coef: np.ndarray, codes: np.ndarray) -> None:
        """Give each level of each covariate that no row of ``codes`` has the mean effect of the levels some row has
        (level 0's effect is 0), in place in ``coef`` (rows of :meth:`_basis` first, as ``mu_coef`` and
        ``logvar_coef``). The ridge fit leaves such a level at 0, which is the reference level's effect, an arbitrary
        site. Level 0 has no row of its own: moving it shifts the B-spline rows (which sum to one at every age) and the
        other levels the opposite way, as :meth:`set_level_effect` does."""
        n_spline = len(self.knots) + 4
        for k, n_lv in enumerate(self.n_levels):
            seen = np.zeros(n_lv, bool)
            seen[np.unique(codes[:, k])] = True
            if seen.all() or not seen.any():
                continue
            rows = [self._level_row(k, level) for level in range(n_lv)]
            effects = np.stack([np.zeros(coef.shape[1]) if r is None else coef[r] for r in rows])
            effects[~seen] = effects[seen].mean(axis=0)
            coef[:n_spline] += effects[0]  # level 0 to its new effect; the others relative to it
            for level in range(1, n_lv):
                coef[rows[level]] = effects[level] - effects[0]

    def _fit_columns(self, age: np.ndarray, codes: np.ndarray, y: np.ndarray):
        """Location and log-variance coefficients of complete columns ``y`` (knots and levels already set), their
        rows' leave-one-out standardised residuals (see :meth:`fit_transform`), each column's curve penalty and its
        roughness weights (location, log variance)."""
        mu_coef, resid, penalties, smoothing = self._fit_location(age, codes, y)
        lv_coef, sd, sd_loo, scale_smoothing = self._fit_log_variance(age, codes, resid)
        # B-splines sum to one, so adding c to every spline coefficient rescales sigma by exp(c/2)
        n_spline = len(self.knots) + 4
        scale = ((resid / sd) ** 2).mean(axis=0)
        lv_coef[:n_spline] += np.log(scale)
        return mu_coef, lv_coef, resid / (sd_loo * np.sqrt(scale)), penalties, (smoothing, scale_smoothing)

    def _fit_log_variance(self, age: np.ndarray, codes: np.ndarray,
                          resid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
        """Log-variance coefficients (rows of :meth:`_basis`) from the location's residuals ``resid``, the full fit's
        scale and each row's leave-one-out scale (both before the rescale to unit variance), and each column's
        roughness weight.

        The log squared residuals are regressed on the basis with every roughness weight of :attr:`SCALE_SMOOTHING`;
        each IDP keeps the weight whose leave-one-out scales give its residuals the best Gaussian log score once
        rescaled to unit variance (the rescale :meth:`_fit_columns` applies): a scale curve is smoothed where that
        predicts left-out subjects' spread better. Log squared residuals are noisy (a log chi-square with one degree
        of freedom has variance pi^2 / 2), so a curve fitted to them follows a few subjects more readily than the
        location does."""
        basis = self._basis(age, codes, extrapolate=False)
        gram = basis.T @ basis
        floor = 1e-6 * np.maximum(resid.var(axis=0), 1e-12)
        log_sq = np.log(resid**2 + floor)

        def fit(s: float):
            candidate, hat = _ridge(basis, gram, log_sq, self._smoothness_penalty(gram, s), with_hat=True)
            fitted = basis @ candidate
            loo = log_sq - _leave_one_out_residual(log_sq, fitted, hat)  # each row's log variance without it
            # twice the mean Gaussian negative log score, less constants, at the best common rescale of the variance
            return (candidate, fitted, loo), loo.mean(axis=0) + np.log((resid**2 * np.exp(-loo)).mean(axis=0) + 1e-300)

        (coef, fitted, loo), _, choice = _best_per_column(self.SCALE_SMOOTHING, fit)
        return coef, np.exp(0.5 * fitted), np.exp(0.5 * loo), [float(self.SCALE_SMOOTHING[k]) for k in choice]

    def _fit_location(self, age: np.ndarray, codes: np.ndarray,
                      y: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float | None], list[float]]:
        """Location coefficients (rows of :meth:`_location_basis`), the training rows' leave-one-out residuals,
        each column's curve penalty (None: no level curves) and its roughness weight.

        Every roughness weight of :attr:`SMOOTHING` is solved for all IDPs at once; each IDP keeps the one with the
        smallest sum of squared leave-one-out residuals (exact for a linear smoother: r_i / (1 - h_ii)). With level
        curves, every candidate penalty of :attr:`CURVE_PENALTIES` is then solved with each IDP's roughness weight
        (IDPs that share a weight in one solve), and each IDP keeps the curves' penalty, or no curves, by the same
        criterion."""
        basis = self._basis(age, codes, extrapolate=True)
        gram = basis.T @ basis

        def fit(s: float):
            candidate, hat = _ridge(basis, gram, y, self._smoothness_penalty(gram, s), with_hat=True)
            r = _leave_one_out_residual(y, basis @ candidate, hat)
            return (candidate, r), (r**2).sum(axis=0)

        (coef, resid), loss, choice = _best_per_column(self.SMOOTHING, fit)
        weight = np.asarray(self.SMOOTHING, float)[choice]
        penalties: list[float | None] = [None] * y.shape[1]
        if not self.curves:
            return coef, resid, penalties, weight.tolist()
        solve, n_curve = self._curve_solver(age, codes, basis)
        coef = np.vstack([coef, np.zeros((n_curve, y.shape[1]))])
        for s in np.unique(weight):
            cols = np.flatnonzero(weight == s)
            main_penalty = self._smoothness_penalty(gram, s)
            for penalty in self.CURVE_PENALTIES:
                candidate, fitted, hat = solve(main_penalty, penalty, y[:, cols])
                r = _leave_one_out_residual(y[:, cols], fitted, hat)
                r_loss = (r**2).sum(axis=0)
                better = r_loss < loss[cols]
                keep = cols[better]
                coef[:, keep], resid[:, keep], loss[keep] = candidate[:, better], r[:, better], r_loss[better]
                for j in keep:
                    penalties[j] = penalty
        return coef, resid, penalties, weight.tolist()

    def _curve_solver(self, age: np.ndarray, codes: np.ndarray, basis: np.ndarray):
        """(``solve``, the number of curve columns): ``solve(main_penalty, penalty, target) -> (coefficients, fitted
        values, hat diagonal)`` of the location with level curves, the curve columns penalised by ``penalty`` x their
        mean Gram diagonal. One covariate with curves (a batch covariate): block-wise (:class:`_LevelCurveRidge`);
        several: one dense solve."""
        if len(self.curves) == 1:
            k = self.curves[0]
            blocks = _LevelCurveRidge(basis, self._spline(age), codes[:, k], self.n_levels[k])

            def solve(main_penalty, penalty, target):
                return blocks.solve(main_penalty, penalty * blocks.unit, target)

            return solve, blocks.curve.shape[1]
        full = np.concatenate([basis, self._curve_basis(age, codes)], axis=1)
        gram, n_main = full.T @ full, basis.shape[1]
        unit = float(np.mean(np.diag(gram)[n_main:]))

        def solve(main_penalty, penalty, target):
            reg = np.zeros_like(gram)
            reg[:n_main, :n_main] = main_penalty
            reg[n_main:, n_main:] = np.diag(np.full(len(gram) - n_main, penalty * unit))
            coef, hat = _ridge(full, gram, target, reg, with_hat=True)
            return coef, full @ coef, hat

        return solve, len(gram) - n_main

    def _smoothness_penalty(self, gram: np.ndarray, smoothing: float) -> np.ndarray:
        """The penalty matrix of a regression on the rows of :meth:`_basis` (the location's common part, or the log
        variance) whose Gram matrix is ``gram``: the ridge, plus ``smoothing`` x the spline columns' roughness scaled
        to their Gram trace.

        A spline column the rows barely inform (its Gram diagonal under :data:`_WEAK_SUPPORT` x the ridge: ages
        between two age groups of a cohort, no subject in between; every column but one in a cohort of one age) is
        shrunk towards the mean of the other spline coefficients instead of towards 0, which dug the curve towards 0
        in such a gap (leave-one-out cannot see a gap, so the roughness weight does not bridge it). Elsewhere the
        ridge dominates no column and the penalty is unchanged."""
        n_main, n_spline = len(gram), len(self.knots) + 4
        ridge = self.ridge * np.trace(gram) / n_main
        penalty = np.diag(np.full(n_main, ridge))
        weak = np.diag(gram)[:n_spline] < _WEAK_SUPPORT * ridge  # spline columns the rows barely inform, if any
        if weak.any() and not weak.all():  # their ridge pulls them to the others' mean, not to 0
            pull = np.zeros((weak.sum(), n_main))
            pull[np.arange(weak.sum()), np.flatnonzero(weak)] = 1.0
            pull[:, np.flatnonzero(~weak)] -= 1.0 / (~weak).sum()
            penalty[np.flatnonzero(weak), np.flatnonzero(weak)] = 0.0
            penalty += ridge * pull.T @ pull
        roughness = self._roughness() if smoothing else np.zeros((n_spline, n_spline))
        if np.trace(roughness) > 0:
            penalty[:n_spline, :n_spline] += (smoothing * roughness * np.trace(gram[:n_spline, :n_spline])
                                              / np.trace(roughness))
        return penalty

    def _level_row(self, k: int, level: int) -> int | None:
        """Row of covariate ``k``'s ``level`` in the coefficient matrices (None: level 0, the reference)."""
        if level == 0:
            return None
        return len(self.knots) + 4 + 1 + sum(max(n - 1, 0) for n in self.n_levels[:k]) + level - 1

    def level_effect(self, k: int, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(D,) location and log-variance effects of covariate ``k``'s ``level`` (level 0's are zero)."""
        row = self._level_row(k, level)
        d = len(self.mu_coef[0])
        if row is None:
            return np.zeros(d), np.zeros(d)
        return np.asarray(self.mu_coef[row], float), np.asarray(self.logvar_coef[row], float)

    def _curve_rows(self, k: int) -> slice:
        """Rows of covariate ``k``'s level curves in ``mu_coef`` (level-major; after the rows of :meth:`_basis`)."""
        n_spline = len(self.knots) + 4
        start = len(self.logvar_coef) + n_spline * sum(self.n_levels[c] for c in self.curves[:self.curves.index(k)])
        return slice(start, start + n_spline * self.n_levels[k])

    def add_level(self, k: int) -> int:
        """Append a level to covariate ``k`` with zero effects (and, with level curves, the common curve);
        returns its code."""
        row = self._level_row(k, self.n_levels[k])
        d = len(self.mu_coef[0])
        if k in self.curves:  # zero curve rows at the end of k's block (curve rows follow the level effects)
            end = self._curve_rows(k).stop
            self.mu_coef[end:end] = [[0.0] * d for _ in range(len(self.knots) + 4)]
        self.mu_coef.insert(row, [0.0] * d)
        self.logvar_coef.insert(row, [0.0] * d)
        self.n_levels[k] += 1
        return self.n_levels[k] - 1

    def set_level_effect(self, k: int, level: int, mu: np.ndarray, logvar: np.ndarray) -> None:
        """Set the effects of covariate ``k``'s ``level``; every other level's location and scale stay as they are.

        Level 0 has no coefficients of its own: its change moves the B-spline coefficients (which sum to one
        at every age) and the opposite change moves the other levels of covariate ``k``.
        """
        row = self._level_row(k, level)
        if row is not None:
            self.mu_coef[row] = np.asarray(mu, float).tolist()
            self.logvar_coef[row] = np.asarray(logvar, float).tolist()
            return
        n_spline = len(self.knots) + 4
        for coef, delta in ((self.mu_coef, np.asarray(mu, float)), (self.logvar_coef, np.asarray(logvar, float))):
            arr = np.asarray(coef, float)
            arr[:n_spline] += delta
            for other in range(1, self.n_levels[k]):
                arr[self._level_row(k, other)] -= delta
            coef[:] = arr.tolist()

    def location_scale(self, age: np.ndarray, codes: np.ndarray,
                       without_level_effect: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(n, D) location and scale of rows (age, codes); ``without_level_effect`` leaves out covariate k's
        location and log-variance effects (its level curves stay): the baseline a level's effects add to."""
        coef = np.asarray(self.mu_coef)
        basis = self._basis(age, codes, True, without_level_effect)
        mu = basis @ coef[:basis.shape[1]]
        if self.curves:  # each row's own level curve, gathered per spline column: no dense row x curve-column matrix
            spline, start = self._spline(age), basis.shape[1]
            for k in self.curves:
                n_lv, n_s = self.n_levels[k], spline.shape[1]
                curve = coef[start:start + n_lv * n_s].reshape(n_lv, n_s, -1)
                rows = np.flatnonzero((codes[:, k] >= 0) & (codes[:, k] < n_lv))
                for j in range(n_s):
                    mu[rows] += spline[rows, j:j + 1] * curve[codes[rows, k], j]
                start += n_lv * n_s
        sd = np.exp(0.5 * (self._basis(age, codes, False, without_level_effect) @ np.asarray(self.logvar_coef)))
        return mu, sd

    def transform(self, y: np.ndarray, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        mu, sd = self.location_scale(age, codes)
        return (np.asarray(y, float) - mu) / sd

    def inverse_transform(self, r: np.ndarray, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        mu, sd = self.location_scale(age, codes)
        return np.asarray(r, float) * sd + mu

    def to_dict(self) -> dict:
        out = {"n_knots": self.n_knots, "ridge": self.ridge, "knots": self.knots, "age_lo": self.age_lo,
               "age_hi": self.age_hi, "n_levels": self.n_levels, "mu_coef": self.mu_coef,
               "logvar_coef": self.logvar_coef, "smoothing": self.smoothing, "scale_smoothing": self.scale_smoothing}
        if self.curves:  # stages without level curves keep the format they had before them
            out.update(curves=self.curves, curve_penalty=self.curve_penalty)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> LocationScale:
        ls = cls(int(data["n_knots"]), float(data["ridge"]), data.get("curves", ()))
        for key in ("knots", "n_levels", "mu_coef", "logvar_coef"):
            setattr(ls, key, data[key])
        ls.curve_penalty = list(data.get("curve_penalty", []))
        ls.smoothing = [float(w) for w in data.get("smoothing", [])]
        ls.scale_smoothing = [float(w) for w in data.get("scale_smoothing", [])]
        ls.age_lo, ls.age_hi = float(data["age_lo"]), float(data["age_hi"])
        return ls
