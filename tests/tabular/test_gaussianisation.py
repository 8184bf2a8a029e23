import numpy as np
import pytest

from normcore.tabular.gaussianisation import IDPTransformer


@pytest.mark.parametrize("method", IDPTransformer.METHODS)
def test_transform_is_monotone_and_inverts_exactly(method):
    rng = np.random.default_rng(0)
    y = np.column_stack([rng.lognormal(0, 0.7, 2000), rng.normal(5, 2, 2000), rng.gamma(2.0, 1.0, 2000)])
    tr = IDPTransformer(method).fit(y)
    probe = np.column_stack([np.linspace(-5, 40, 500)] * 3)
    probe[:, 0] = np.linspace(0.01, 40, 500)  # inside Yeo-Johnson's domain for every lambda
    z = tr.transform(probe)
    assert np.all(np.diff(z, axis=0) > 0)
    np.testing.assert_allclose(tr.inverse_transform(z), probe, rtol=1e-7, atol=1e-7)
    zt = tr.transform(y)
    assert np.all(np.abs(zt.mean(0)) < 0.1) and np.all(np.abs(zt.std(0) - 1) < 0.1)


def test_quantile_transform_gaussianises_a_skewed_column():
    from scipy import stats

    y = np.random.default_rng(1).lognormal(0, 1, (5000, 1))
    z = IDPTransformer("quantile").fit(y).transform(y)[:, 0]
    assert abs(stats.skew(z)) < 0.05 and abs(stats.skew(y[:, 0])) > 2


def test_transformer_round_trips_through_dict():
    y = np.random.default_rng(2).normal(size=(300, 2))
    tr = IDPTransformer("yeo-johnson").fit(y)
    again = IDPTransformer.from_dict(tr.to_dict())
    np.testing.assert_array_equal(again.transform(y), tr.transform(y))


def test_quantile_map_extrapolates_a_normal_column_to_its_normal_scores():
    """Beyond the training range the map follows the line fitted to the outer 5%, not the sample extreme."""
    true_z = np.r_[np.linspace(3.5, 6, 11), -np.linspace(3.5, 6, 11)]
    errors = []
    for seed in range(20):
        column = np.random.default_rng(seed).normal(10, 3, (1000, 1))
        mapped = IDPTransformer("quantile").fit(column).transform(10 + 3 * true_z[:, None])[:, 0]
        errors.append(np.abs(mapped - true_z))
    assert np.median(errors) < 0.35  # 0.25 here; through the sample extremes (the map before 2026-12-05) 0.49


def test_quantile_map_saved_without_tail_lines_extrapolates_along_the_outer_chord():
    knots = {"x": [0.0, 1.0, 2.0, 4.0, 5.0], "z": [-2.0, -1.0, 0.0, 1.0, 3.0]}
    old = IDPTransformer.from_dict({"method": "quantile", "n_knots": 5, "params": [knots]})
    np.testing.assert_allclose(old.transform(np.array([[-1.0], [6.0]]))[:, 0], [-3.0, 5.0])


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_quantile_map_of_a_few_rows_is_monotone_and_inverts(n):
    column = np.random.default_rng(n).normal(size=(n, 1))
    tr = IDPTransformer("quantile").fit(column)
    probe = np.linspace(-6, 6, 101)[:, None]
    z = tr.transform(probe)
    assert np.all(np.diff(z[:, 0]) > 0)
    np.testing.assert_allclose(tr.inverse_transform(z), probe, atol=1e-9)


def test_quantile_map_is_fitted_on_the_observed_values_and_maps_missing_to_missing():
    column = np.random.default_rng(5).gamma(2.0, 1.0, 800)
    gappy = column.copy()
    gappy[::4] = np.nan
    tr = IDPTransformer("quantile").fit(gappy[:, None])
    assert tr.params == IDPTransformer("quantile").fit(column[~np.isnan(gappy)][:, None]).params
    z = tr.transform(gappy[:, None])[:, 0]
    assert np.array_equal(np.isnan(z), np.isnan(gappy))
