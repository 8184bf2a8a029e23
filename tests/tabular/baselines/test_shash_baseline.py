import numpy as np
import pandas as pd
import pytest
from scipy import stats

from normcore.registry import load_model
from normcore.tabular.baselines import LocationScaleSHASH
from normcore.tabular.baselines.shash import fit_shash, shash_inverse, shash_moments, shash_z
from normcore.tabular.synthetic import SyntheticTruth


def test_shash_fit_recovers_known_parameters():
    p = {"loc": 0.3, "scale": 1.2, "eps": 0.5, "delta": 1.3}
    z = np.random.default_rng(0).standard_normal(20000)
    r = shash_inverse(z, p)
    np.testing.assert_allclose(shash_z(r, p), z, atol=1e-9)
    fit = fit_shash(r)
    for k in p:
        assert fit[k] == pytest.approx(p[k], abs=0.08), k
    mean, var = shash_moments(fit)
    assert mean == pytest.approx(r.mean(), abs=0.03) and var == pytest.approx(r.var(), rel=0.05)


@pytest.fixture(scope="module")
def fitted():
    truth = SyntheticTruth.create(d=4, n_sites=2, seed=5)
    df = truth.sample(4000, seed=6)
    return LocationScaleSHASH().fit(df, age="age", covariates=["sex", "site"], idps=truth.idp_names), truth


def test_baseline_is_calibrated_on_fresh_controls_for_unimodal_idps(fitted):
    model, truth = fitted
    fresh = truth.sample(3000, seed=7)
    scores = model.score(fresh)
    for j, name in enumerate(truth.idp_names):
        if truth.kinds[j] != "bimodal":
            assert stats.kstest(scores[f"centile:{name}"], "uniform").pvalue > 0.001, name


def test_baseline_centiles_invert_its_cdf_and_match_truth(fitted):
    model, truth = fitted
    cur = model.centiles([30.0, 60.0], quantiles=(0.1, 0.5, 0.9), fixed={"sex": 0, "site": "site_01"})
    sk = truth.kinds.index("skewed")
    c = cur[cur.idp == truth.idp_names[sk]]
    p = truth.cdf(c.value.to_numpy(), c.age.to_numpy(), 0, sk, site="site_01")
    assert np.abs(p - c["quantile"].to_numpy()).mean() < 0.03


def test_baseline_marginalises_an_unfixed_site(fitted):
    model, truth = fitted
    cur = model.centiles([50.0], quantiles=(0.5,), fixed={"sex": 1})
    a = model.centiles([50.0], quantiles=(0.5,), fixed={"sex": 1, "site": "site_01"}).value.to_numpy()
    b = model.centiles([50.0], quantiles=(0.5,), fixed={"sex": 1, "site": "site_02"}).value.to_numpy()
    assert np.all((cur.value.to_numpy() >= np.minimum(a, b) - 1e-9) & (cur.value.to_numpy() <= np.maximum(a, b) + 1e-9))


def test_baseline_sample_has_no_dependence_and_round_trips(fitted, tmp_path):
    model, truth = fitted
    cov = pd.DataFrame({"age": [80.0], "sex": [0], "site": ["site_01"]})
    s = model.sample(cov, n=4000)
    assert abs(stats.spearmanr(s[truth.idp_names[1]], s[truth.idp_names[3]]).statistic) < 0.05
    model.save(tmp_path / "b")
    again = load_model(tmp_path / "b")
    fresh = truth.sample(20, seed=8)
    pd.testing.assert_frame_equal(again.score(fresh), model.score(fresh))
