import numpy as np
import pytest
from scipy import stats

from normcore.tabular.synthetic import SyntheticTruth, make_synthetic


@pytest.fixture(scope="module")
def big():
    return make_synthetic(40000, d=10, n_sites=2, seed=11)


def test_exact_cdf_makes_samples_uniform(big):
    df, truth = big
    for name in truth.idp_names:
        u = truth.cdf(df[name].to_numpy(), df.age.to_numpy(), df.sex.to_numpy(), name, site=df.site.to_numpy())
        assert stats.kstest(u, "uniform").pvalue > 1e-3, name


def test_empirical_quantiles_match_exact_in_an_age_bin(big):
    df, truth = big
    sel = df[(df.age > 60) & (df.age < 62) & (df.sex == 0) & (df.site == truth.site_names[0])]
    assert len(sel) > 150
    for name in truth.idp_names:
        # transform to the exact centile scale so rows with slightly different ages are comparable
        u = truth.cdf(sel[name].to_numpy(), sel.age.to_numpy(), 0, name, site=sel.site.to_numpy())
        q_emp = np.quantile(u, [0.1, 0.5, 0.9])
        np.testing.assert_allclose(q_emp, [0.1, 0.5, 0.9], atol=0.08)
        y_med = truth.quantile(0.5, 61.0, 0, name, site=truth.site_names[0])
        assert abs(truth.cdf(y_med, 61.0, 0, name, site=truth.site_names[0]) - 0.5) < 1e-6


def test_quantile_inverts_cdf_for_every_kind():
    truth = SyntheticTruth.create(d=5, seed=1)
    assert set(truth.kinds) == {"bimodal", "skewed", "gaussian"}
    q = np.linspace(0.01, 0.99, 37)
    for j in range(truth.d):
        for age in (20.0, 55.0, 90.0):
            y = truth.quantile(q, age, 1, j)
            assert np.all(np.diff(y) > 0)
            np.testing.assert_allclose(truth.cdf(y, age, 1, j), q, atol=1e-8)


def test_bimodal_idp_is_bimodal_with_age_dependent_weight():
    truth = SyntheticTruth.create(d=2, seed=0)
    j = truth.kinds.index("bimodal")
    age = truth.mix_centre[j]
    grid = np.linspace(*truth.quantile(np.array([0.001, 0.999]), age, 0, j), 600)
    density = np.diff(truth.cdf(grid, age, 0, j))
    peaks = np.flatnonzero((density[1:-1] > density[:-2]) & (density[1:-1] > density[2:]))
    assert len(peaks) >= 2
    assert truth.mixture_weight(80.0, j) > truth.mixture_weight(20.0, j) + 0.5


def test_heteroscedastic_and_dependence_grow_with_age():
    truth = SyntheticTruth.create(d=10, seed=2)
    assert all(truth.spread(85.0, j) > truth.spread(25.0, j) for j in range(truth.d))
    r_young, r_old = truth.latent_correlation(20.0), truth.latent_correlation(90.0)
    off = ~np.eye(10, dtype=bool)
    assert np.abs(r_old[off]).mean() > 1.5 * np.abs(r_young[off]).mean()


def test_patients_are_shifted_by_the_known_amount_in_z():
    truth = SyntheticTruth.create(d=10, seed=4)
    df = truth.sample(200, seed=5, patients=3000, patient_shift=2.0)
    pat = df[df.group == "patient"]
    for j in range(truth.d):
        z = truth.true_z(pat[truth.idp_names[j]].to_numpy(), pat.age.to_numpy(), pat.sex.to_numpy(), j)
        expected = 2.0 if j in truth.default_patient_idps() else 0.0
        assert abs(z.mean() - expected) < 0.1, (j, z.mean())


def test_truth_round_trips_through_json(tmp_path):
    truth = SyntheticTruth.create(d=7, n_sites=3, seed=9)
    truth.save(tmp_path / "t.json")
    again = SyntheticTruth.load(tmp_path / "t.json")
    assert again == truth
    np.testing.assert_array_equal(again.quantile(0.3, 40.0, 1, 2, site="site_02"),
                                  truth.quantile(0.3, 40.0, 1, 2, site="site_02"))
