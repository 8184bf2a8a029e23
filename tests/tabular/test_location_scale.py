import numpy as np
import pytest

from normcore.tabular.covariates import MARGINALISE


def test_location_scale_training_residuals_are_leave_one_out():
    """Each training row is standardised by a location and a scale fitted without it (explicit refits here)."""
    from normcore.tabular.location_scale import LocationScale

    rng = np.random.default_rng(0)
    n = 60
    age = rng.uniform(20, 80, n)
    codes = np.c_[rng.integers(0, 3, n)]
    y = np.c_[0.05 * age + codes[:, 0] + rng.normal(size=n) * (1 + codes[:, 0])]
    ls = LocationScale(n_knots=2, ridge=1e-3)
    r = ls.fit_transform(age, codes, y, [3])

    def ridge(basis, target, keep, smoothing):  # the fit's penalty (ridge and chosen roughness), held fixed
        gram = basis.T @ basis
        penalty = ls._smoothness_penalty(gram, smoothing)
        return np.linalg.solve(basis[keep].T @ basis[keep] + penalty, basis[keep].T @ target[keep])

    basis, var_basis = ls._basis(age, codes, extrapolate=True), ls._basis(age, codes, extrapolate=False)
    everyone = np.ones(n, bool)
    u = (y - y.mean()) / y.std()  # the stage fits each IDP in its standard units
    resid = np.array([float((u[i] - basis[i] @ ridge(basis, u, np.arange(n) != i, ls.smoothing[0]))[0])
                      for i in range(n)])
    log_sq = np.log(resid**2 + 1e-6 * resid.var())
    _, sd = ls.location_scale(age, codes)  # the full fit, rescaled to unit variance (in the IDP's units)
    sd = sd / y.std()
    rescale = sd[:, 0] / np.exp(0.5 * var_basis @ ridge(var_basis, log_sq, everyone, ls.scale_smoothing[0]))
    assert np.ptp(rescale) < 1e-9 * rescale[0]
    assert ((resid / sd[:, 0]) ** 2).mean() == pytest.approx(1.0, rel=1e-6)
    for i in (0, 17, 42):
        without_i = ridge(var_basis, log_sq, np.arange(n) != i, ls.scale_smoothing[0])
        sd_without_i = np.exp(0.5 * var_basis[i] @ without_i) * rescale[0]
        assert r[i, 0] == pytest.approx(resid[i] / sd_without_i, rel=1e-6)


@pytest.mark.parametrize("units", [1e-9, 1e-4, 1e3, 1e6])
def test_the_residuals_do_not_depend_on_the_units(units):
    """The same IDP in other units (mm^2/s, cm^3 or mm^3) gets the same training and new residuals: the stage fits
    it in its standard units. (Fitted in its own units, the ridges pulled towards a level and a spread of 1 in them:
    residuals moved by 0.04-0.12 at 1e-2 to 1e6, by 2.9 at 1e-9.)"""
    from normcore.tabular.location_scale import LocationScale

    age, codes, y = _sites_scaling_an_age_trend(800, 2)
    y = y + 40.0  # a level far from 0 in its SD's units, as a cortical thickness or a volume has
    reference, scaled = LocationScale(curves=[1]), LocationScale(curves=[1])
    r = reference.fit_transform(age, codes, y, [2, 4])
    np.testing.assert_allclose(scaled.fit_transform(age, codes, y * units, [2, 4]), r, atol=1e-9)
    np.testing.assert_allclose(scaled.transform(y[:40] * units, age[:40], codes[:40]),
                               reference.transform(y[:40], age[:40], codes[:40]), atol=1e-9)
    mu, sd = scaled.location_scale(age[:40], codes[:40])
    mu_ref, sd_ref = reference.location_scale(age[:40], codes[:40])
    np.testing.assert_allclose(mu, mu_ref * units, rtol=1e-9)
    np.testing.assert_allclose(sd, sd_ref * units, rtol=1e-9)


def test_location_at_the_oldest_training_age_when_a_knot_sits_there():
    """Integer ages with a third or more of the rows at the oldest: the top age-quantile knot equals the oldest age.
    The location there was 0 (scipy's B-spline basis is all zeros at the end of such a knot vector), so those
    subjects' z and the training residuals were wild (seen on fcon1000's Oulu site, ages 20-22)."""
    from normcore.tabular.location_scale import LocationScale

    rng = np.random.default_rng(3)
    age = np.r_[np.full(2, 20.0), np.full(20, 21.0), np.full(29, 22.0)]
    y = np.c_[2.5 + 0.01 * (age - 21) + 0.1 * rng.normal(size=len(age))]
    codes = np.zeros((len(age), 1), int)
    ls = LocationScale().fit(age, codes, y, [1])
    assert ls.knots[-1] == ls.age_hi == 22.0  # the case itself
    mu, sd = ls.location_scale(np.array([20.0, 21.0, 22.0]), np.zeros((3, 1), int))
    for i, a in enumerate((20.0, 21.0, 22.0)):
        assert mu[i, 0] == pytest.approx(y[age == a, 0].mean(), abs=0.1)
    assert np.all(np.abs(ls.fit_transform(age, codes, y, [1])) < 5)


def test_a_cohort_of_one_age_is_held_at_that_age():
    """Every training subject aged 40: no age curve can be fitted, and every age is scored as 40 would be. (Before,
    ages other than 40 were evaluated at the far end of the nominal 1e-6-year range, a basis column no row has: the
    location there was 0.)"""
    from normcore.tabular.location_scale import LocationScale

    rng = np.random.default_rng(0)
    y = np.c_[5 + rng.normal(size=300), -2 + 3 * rng.normal(size=300)]
    ls = LocationScale().fit(np.full(300, 40.0), np.zeros((300, 1), int), y, [1])
    mu, sd = ls.location_scale(np.array([20.0, 40.0, 40.5, 45.0, 80.0]), np.zeros((5, 1), int))
    np.testing.assert_allclose(mu, np.broadcast_to(mu[1], mu.shape))
    np.testing.assert_allclose(sd, np.broadcast_to(sd[1], sd.shape))
    np.testing.assert_allclose(mu[1], y.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(sd[1], y.std(axis=0), rtol=0.05)


def test_the_location_and_scale_bridge_an_age_gap_between_two_groups():
    """A cohort aged 20 and 60, no one between: the B-spline columns between them have no rows, and the ridge shrank
    them to 0 (the location at 40 was 35 on a truth of 140; leave-one-out cannot see the gap). Now such columns are
    shrunk towards the others, and the location and scale between the groups lie between theirs."""
    from normcore.tabular.location_scale import LocationScale

    rng = np.random.default_rng(0)
    age = np.r_[np.full(30, 20.0), np.full(30, 60.0)]
    y = np.c_[100 + age + 5 * rng.normal(size=len(age))]
    ls = LocationScale().fit(age, np.zeros((len(age), 1), int), y, [1])
    grid = np.array([20.0, 30.0, 40.0, 50.0, 60.0])
    mu, sd = ls.location_scale(grid, np.zeros((5, 1), int))
    assert np.all(np.diff(mu[:, 0]) > 0) and abs(mu[2, 0] - 140) < 5
    assert min(sd[0, 0], sd[-1, 0]) * 0.9 < sd[2, 0] < max(sd[0, 0], sd[-1, 0]) * 1.1


def test_location_scale_training_residuals_are_spread_like_new_subjects():
    """At small sites in-sample residuals are too narrow (a large residual widens its own site's scale); the
    leave-one-out ones a model is trained on are as wide as those of new subjects from the same sites."""
    from normcore.tabular.location_scale import LocationScale

    rng = np.random.default_rng(0)
    sites, d = 40, 20
    loc, spread = rng.normal(0, 1, (sites, d)), np.exp(rng.normal(0, 0.3, (sites, d)))

    def draw(per_site):
        site = np.repeat(np.arange(sites), per_site)
        age = rng.uniform(20, 80, len(site))
        return age, site[:, None], 0.02 * age[:, None] + loc[site] + spread[site] * rng.normal(size=(len(site), d))

    age, codes, y = draw(6)
    ls = LocationScale()
    train = ls.fit_transform(age, codes, y, [sites])
    new_age, new_codes, new_y = draw(50)
    new = ls.transform(new_y, new_age, new_codes)
    assert (train**2).mean() / (new**2).mean() == pytest.approx(1.0, abs=0.12)  # in-sample: 0.59


def _sites_scaling_an_age_trend(n: int, seed: int):
    """Four sites that scale an IDP's whole deviation from a common curve, including an age-dependent mean of
    it (a site-by-age interaction of the location); a second IDP without one."""
    rng = np.random.default_rng(seed)
    age, site, sex = rng.uniform(20, 80, n), rng.integers(0, 4, n), rng.integers(0, 2, n)
    scale = np.array([0.7, 1.0, 1.3, 1.6])[site]
    trend = np.tanh((age - 50) / 10)
    y = np.c_[0.05 * age + 0.3 * site + scale * (trend + 0.3 * rng.normal(size=n)),
              0.02 * age + 0.2 * sex + rng.normal(size=n)]
    return age, np.c_[sex, site], y


def _site_by_age_spread(r: np.ndarray, age: np.ndarray, site: np.ndarray) -> float:
    """SD over sites of the mean residual in an age band, averaged over bands: 0 when no site has an age curve of
    its own left."""
    band = np.digitize(age, [35, 50, 65])
    return float(np.mean([np.std([r[(band == b) & (site == s)].mean() for s in range(4)]) for b in range(4)]))


def test_level_curves_remove_a_site_by_age_interaction_from_new_subjects():
    from normcore.tabular.location_scale import LocationScale

    age, codes, y = _sites_scaling_an_age_trend(3000, 0)
    plain, curves = LocationScale(), LocationScale(curves=[1])
    plain.fit(age, codes, y, [2, 4])
    curves.fit(age, codes, y, [2, 4])
    new_age, new_codes, new_y = _sites_scaling_an_age_trend(4000, 1)
    r_plain, r_curves = plain.transform(new_y, new_age, new_codes), curves.transform(new_y, new_age, new_codes)
    assert _site_by_age_spread(r_plain[:, 0], new_age, new_codes[:, 1]) > 0.4  # 0.50 here
    assert _site_by_age_spread(r_curves[:, 0], new_age, new_codes[:, 1]) < 0.15  # 0.10 (sampling noise alone: 0.06)
    assert curves.curve_penalty[0] is not None  # leave-one-out error chose curves for the first IDP ...
    assert np.mean(r_curves[:, 1] ** 2) < np.mean(r_plain[:, 1] ** 2) * 1.01  # ... and did not hurt the second
    assert "curves" not in plain.to_dict()  # stages without level curves keep their format


def test_level_curves_survive_a_new_level_and_a_round_trip():
    from normcore.tabular.location_scale import LocationScale

    age, codes, y = _sites_scaling_an_age_trend(2000, 2)
    ls = LocationScale(curves=[1]).fit(age, codes, y, [2, 4])
    mu, sd = ls.location_scale(age, codes)
    common, _ = ls.location_scale(age, codes, without_level_effect=1)
    assert ls.add_level(1) == 4
    np.testing.assert_allclose(ls.location_scale(age, codes)[0], mu, atol=1e-12)  # the old levels are untouched
    np.testing.assert_allclose(ls.location_scale(age, codes)[1], sd, atol=1e-12)
    new = codes.copy()
    new[:, 1] = 4
    plain_common = ls._basis(age, new, extrapolate=True) @ np.asarray(ls.mu_coef)[:len(ls.logvar_coef)]
    np.testing.assert_allclose(ls.location_scale(age, new)[0], plain_common, atol=1e-12)  # the common curve
    assert np.abs(common - plain_common).max() > 0.05  # unlike a training level without its effect
    again = LocationScale.from_dict(ls.to_dict())
    np.testing.assert_allclose(again.location_scale(age, new)[0], ls.location_scale(age, new)[0])
    assert again.curves == [1] and again.curve_penalty == ls.curve_penalty


def test_location_scale_fits_each_idp_on_its_observed_rows():
    from normcore.tabular.location_scale import LocationScale

    age, codes, y = _sites_scaling_an_age_trend(1500, 3)
    missing = np.random.default_rng(4).random(len(age)) < 0.3
    gappy = np.column_stack([y, np.where(missing, np.nan, y[:, 0])])  # IDP 2: IDP 0 with 30% of its rows missing
    ls = LocationScale(curves=[1])
    r = ls.fit_transform(age, codes, gappy, [2, 4])
    complete = LocationScale(curves=[1])
    r_complete = complete.fit_transform(age, codes, y, [2, 4])
    # the complete IDPs are fitted exactly as without the gappy one
    np.testing.assert_allclose(r[:, :2], r_complete, atol=1e-12)
    np.testing.assert_allclose(np.asarray(ls.mu_coef)[:, :2], np.asarray(complete.mu_coef), atol=1e-12)
    assert ls.curve_penalty[:2] == complete.curve_penalty
    # the gappy one: NaN exactly where missing, and the fit of its observed rows alone (same knots and levels)
    assert np.array_equal(np.isnan(r[:, 2]), missing)
    seen = y[~missing, 0]
    standard = ((seen - seen.mean()) / seen.std())[:, None]
    mu, lv, resid, _, _ = complete._fit_columns(age[~missing], codes[~missing], standard)
    np.testing.assert_allclose(r[~missing, 2], resid[:, 0], atol=1e-12)
    n_spline = len(ls.knots) + 4  # stored in the IDP's units (fitted in its standard units)
    np.testing.assert_allclose(np.asarray(ls.mu_coef)[:, 2], mu[:, 0] * seen.std() + (np.arange(len(mu)) < n_spline)
                               * seen.mean(), atol=1e-12)
    np.testing.assert_allclose(np.asarray(ls.logvar_coef)[:, 2], lv[:, 0] + (np.arange(len(lv)) < n_spline) * 2
                               * np.log(seen.std()), atol=1e-12)
    assert np.corrcoef(r[~missing, 2], r[~missing, 0])[0, 1] > 0.99  # and it standardises like the complete fit
    assert np.isfinite(ls.transform(y[:, [0, 1, 0]], age, codes)).all()  # new subjects need no missing pattern


def test_an_idp_observed_on_one_row_is_left_to_its_caller():
    """One observed value gives no location and scale to fit (a point mass's body of one value): the IDP keeps
    location 0 and scale 1, its residual is its value, and the other IDPs are fitted as without it."""
    from normcore.tabular.location_scale import LocationScale

    age, codes, y = _sites_scaling_an_age_trend(600, 5)
    single = np.full(len(age), np.nan)
    single[17] = 4.5
    stage = LocationScale(curves=[1])
    r = stage.fit_transform(age, codes, np.column_stack([y, single]), [2, 4])
    alone = LocationScale(curves=[1]).fit_transform(age, codes, y, [2, 4])
    np.testing.assert_allclose(r[:, :2], alone, atol=1e-12)
    assert r[17, 2] == 4.5 and np.isnan(np.delete(r[:, 2], 17)).all()
    mu, sd = stage.location_scale(age[:3], codes[:3])
    assert (mu[:, 2] == 0).all() and (sd[:, 2] == 1).all()


@pytest.mark.parametrize("unseen", [3, 0])
def test_a_site_that_never_measured_an_idp_gets_the_mean_site_effect_not_the_reference_site_s(unseen):
    from normcore.tabular.location_scale import LocationScale

    rng = np.random.default_rng(6)
    n = 2000
    age, site = rng.uniform(20, 80, n), rng.integers(0, 4, n)
    codes = site[:, None]
    offset = np.array([0.0, 1.0, 2.0, 4.0])[site]
    y = np.column_stack([offset + rng.normal(0, 0.3, n), offset + rng.normal(0, 0.3, n)])
    y[site == unseen, 1] = np.nan
    ls = LocationScale(curves=[0])
    ls.fit_transform(age, codes, y, [4])
    probe_age, probe_codes = np.full(4, 50.0), np.arange(4)[:, None]
    mu, sd = ls.location_scale(probe_age, probe_codes)
    seen = [s for s in range(4) if s != unseen]
    expected = np.array([0.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(mu[seen, 1], expected[seen], atol=0.05)  # measured sites keep their own effects
    assert mu[unseen, 1] == pytest.approx(expected[seen].mean(), abs=0.05)  # the unmeasured one: their mean
    np.testing.assert_allclose(mu[:, 0], expected, atol=0.05)  # and the complete IDP is untouched
    assert sd[unseen, 1] == pytest.approx(np.mean(sd[seen, 1]), rel=0.1)


def _sparse_old_ages_errors(ridge_only: str, n_young: int, seeds: int, spread, error) -> dict[str, float]:
    """Mean over ``seeds`` cohorts (``n_young`` subjects aged 18-22, a dozen 22-30; y = 100 + 2 age + spread(age) x
    noise) of ``error(mu, sd, grid)`` over ages 23-30, for the stage with ``ridge_only`` set to (0.0,) (the ridge
    alone) and for the stage as it is."""
    from normcore.tabular.location_scale import LocationScale

    ridge = type("RidgeOnly", (LocationScale,), {ridge_only: (0.0,)})
    grid = np.linspace(23, 30, 30)
    errors = {"ridge": [], "smoothed": []}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        age = np.r_[rng.uniform(18, 22, n_young), rng.uniform(22, 30, 12)]
        y = np.c_[100 + 2 * age + spread(age) * rng.normal(size=len(age))]
        codes = np.zeros((len(age), 1), int)
        for name, cls in (("ridge", ridge), ("smoothed", LocationScale)):
            mu, sd = cls().fit(age, codes, y, [1]).location_scale(grid, np.zeros((len(grid), 1), int))
            errors[name].append(error(mu[:, 0], sd[:, 0], grid))
    return {name: float(np.mean(values)) for name, values in errors.items()}


def test_roughness_weight_smooths_sparse_ages_and_spares_a_well_sampled_curve():
    """A small, age-skewed cohort (most subjects 18-22, a dozen older) of a straight-line truth: the curve chosen by
    leave-one-out roughness weight is nearer the truth over the sparse ages than the ridge alone. A well-sampled
    curved truth keeps its curvature (a small weight), and the chosen weights survive a round trip."""
    from normcore.tabular.location_scale import LocationScale

    errors = _sparse_old_ages_errors("SMOOTHING", 120, 5, lambda age: 10.0,
                                     lambda mu, sd, grid: np.sqrt(np.mean((mu - (100 + 2 * grid)) ** 2)))
    assert errors["smoothed"] < 0.9 * errors["ridge"]

    rng = np.random.default_rng(0)
    age = rng.uniform(10, 80, 2000)
    truth = 50 * np.exp(-((age - 45) / 12) ** 2)  # a bump: a straight line would miss it by up to 50
    ls = LocationScale().fit(age, np.zeros((len(age), 1), int), np.c_[truth + rng.normal(size=len(age))], [1])
    grid = np.linspace(15, 75, 61)
    mu, _ = ls.location_scale(grid, np.zeros((len(grid), 1), int))
    assert np.max(np.abs(mu[:, 0] - 50 * np.exp(-((grid - 45) / 12) ** 2))) < 10
    assert LocationScale.from_dict(ls.to_dict()).smoothing == ls.smoothing


def test_scale_roughness_weight_steadies_the_spread_over_sparse_ages():
    """A small, age-skewed cohort (most subjects 18-22, a dozen older) whose spread grows slowly with age: the scale
    curve chosen by leave-one-out roughness weight is nearer the truth over the sparse ages than the fixed ridge's
    (which follows the few older subjects' squared residuals), and the chosen weights survive a round trip."""
    from normcore.tabular.location_scale import LocationScale

    errors = _sparse_old_ages_errors("SCALE_SMOOTHING", 150, 8, lambda age: 5 + 0.2 * age,
                                     lambda mu, sd, grid: np.sqrt(np.mean(np.log(sd / (5 + 0.2 * grid)) ** 2)))
    assert errors["smoothed"] < 0.8 * errors["ridge"]
    rng = np.random.default_rng(0)
    age = rng.uniform(18, 30, 200)
    ls = LocationScale().fit(age, np.zeros((len(age), 1), int), np.c_[age + rng.normal(size=len(age))], [1])
    assert LocationScale.from_dict(ls.to_dict()).scale_smoothing == ls.scale_smoothing != []


def test_location_and_scale_stay_at_the_nearer_edge_beyond_the_training_ages():
    """The documented contract beyond the training ages: no extrapolated trend (a straight continuation measured
    worse above the oldest age on fcon1000), even where the curve is steep at the edge."""
    from normcore.tabular.location_scale import LocationScale

    rng = np.random.default_rng(0)
    age = rng.uniform(20, 60, 400)
    y = np.c_[0.05 * (age - 20) ** 2 + (1 + 0.05 * age) * rng.normal(size=len(age))]
    ls = LocationScale().fit(age, np.zeros((len(age), 1), int), y, [1])
    edges = np.array([ls.age_lo, ls.age_hi])
    mu_edge, sd_edge = ls.location_scale(edges, np.zeros((2, 1), int))
    mu, sd = ls.location_scale(np.array([5.0, 15.0, 70.0, 90.0]), np.zeros((4, 1), int))
    np.testing.assert_allclose(mu[:, 0], mu_edge[[0, 0, 1, 1], 0])
    np.testing.assert_allclose(sd[:, 0], sd_edge[[0, 0, 1, 1], 0])
    assert mu_edge[1, 0] - mu_edge[0, 0] > 50  # the curve itself is steep: the flatness is the edge rule's


def test_level_curves_solved_block_wise_equal_the_dense_ridge():
    """The location with one covariate's level curves (a batch covariate) is solved through the curve blocks' Schur
    complement; coefficients, fitted values and hat diagonal equal the dense ridge on [basis, curves], rows of no
    level included."""
    from normcore.tabular.location_scale import LocationScale, _LevelCurveRidge, _ridge

    rng = np.random.default_rng(0)
    n, k = 400, 9
    age, sex, site = rng.uniform(20, 80, n), rng.integers(0, 2, n), rng.integers(0, k, n)
    site[:4] = -1  # rows of no level: no curve
    stage = LocationScale(curves=(1,))
    stage.n_levels, stage.age_lo, stage.age_hi = [2, k], age.min(), age.max()
    stage.knots = list(np.quantile(age, [0.2, 0.4, 0.6, 0.8]))
    codes = np.column_stack([sex, site])
    basis = stage._basis(age, codes, True)
    full = np.concatenate([basis, stage._curve_basis(age, codes)], axis=1)
    y = rng.normal(size=(n, 3))
    main = stage._smoothness_penalty(basis.T @ basis, 1.0)
    blocks = _LevelCurveRidge(basis, stage._spline(age), site, k)
    m = basis.shape[1]
    for penalty in (1e-3, 1.0, 100.0):
        reg = np.zeros((full.shape[1], full.shape[1]))
        reg[:m, :m], reg[m:, m:] = main, np.eye(full.shape[1] - m) * penalty
        coef, hat = _ridge(full, full.T @ full, y, reg, with_hat=True)
        b_coef, b_fitted, b_hat = blocks.solve(main, penalty, y)
        np.testing.assert_allclose(b_coef, coef, rtol=0, atol=1e-9)
        np.testing.assert_allclose(b_fitted, full @ coef, rtol=0, atol=1e-9)
        np.testing.assert_allclose(b_hat, hat, rtol=0, atol=1e-12)
    assert blocks.unit == pytest.approx(np.mean(np.diag(full.T @ full)[m:]))


@pytest.mark.parametrize("curves", [(1,), (0, 1)])
def test_the_location_with_level_curves_equals_the_dense_basis_product(curves):
    """location_scale adds each row's own level curve without building the row x curve-column matrix; the result is
    the dense basis times the coefficients, for rows of no level and without a covariate's level effect too."""
    from normcore.tabular.location_scale import LocationScale

    rng = np.random.default_rng(1)
    n, k = 500, 7
    age, sex, site = rng.uniform(20, 80, n), rng.integers(0, 2, n), rng.integers(0, k, n)
    codes = np.column_stack([sex, site])
    y = rng.normal(size=(n, 3)) + site[:, None] * (age[:, None] - 50) / 50
    stage = LocationScale(curves=curves).fit(age, codes, y, [2, k])
    codes[:5, 1] = MARGINALISE
    for without in (None, 1):
        mu, _ = stage.location_scale(age, codes, without)
        dense = stage._location_basis(age, codes, without) @ np.asarray(stage.mu_coef)
        np.testing.assert_allclose(mu, dense, rtol=0, atol=1e-10)
