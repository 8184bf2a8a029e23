import numpy as np
import pytest
from scipy import stats

from normcore._utils.errors import InputError
from normcore.tabular.baselines.pcntoolkit_blr import PCNToolkitBLR, pcntoolkit_available
from normcore.tabular.synthetic import SyntheticTruth

pytestmark = pytest.mark.skipif(not pcntoolkit_available(),
                                reason="PCNtoolkit not installed (pip install -r requirements-baselines.txt)")


@pytest.fixture(scope="module")
def fitted():
    truth = SyntheticTruth.create(d=3, n_sites=2, seed=2)
    df = truth.sample(1500, seed=3)
    return PCNToolkitBLR().fit(df, age="age", covariates=["sex", "site"], idps=truth.idp_names), truth


def test_adapter_scores_fresh_controls_with_the_common_columns(fitted):
    model, truth = fitted
    fresh = truth.sample(1500, seed=4)
    scores = model.score(fresh)
    assert {f"z:{truth.idp_names[0]}", "multivariate_d2", "out_of_range"} <= set(scores.columns)
    for j, name in enumerate(truth.idp_names):
        z = scores[f"z:{name}"].to_numpy()
        true_z = truth.true_z(fresh[name].to_numpy(), fresh.age.to_numpy(), fresh.sex.to_numpy(), j,
                              site=fresh.site.to_numpy())
        assert np.corrcoef(z, true_z)[0, 1] > 0.9, name
        assert abs(z.mean()) < 0.15 and 0.8 < z.std() < 1.2
    assert np.allclose(scores[f"centile:{truth.idp_names[0]}"], stats.norm.cdf(scores[f"z:{truth.idp_names[0]}"]))


def test_adapter_centiles_track_the_truth(fitted):
    model, truth = fitted
    j = truth.kinds.index("gaussian")
    cur = model.centiles([40.0, 70.0], quantiles=(0.1, 0.5, 0.9), fixed={"sex": 1, "site": "site_02"})
    c = cur[cur.idp == truth.idp_names[j]]
    assert list(cur.columns) == ["age", "sex", "site", "idp", "quantile", "value"]
    p = truth.cdf(c.value.to_numpy(), c.age.to_numpy(), 1, j, site="site_02")
    assert np.abs(p - c["quantile"].to_numpy()).mean() < 0.05


def test_adapter_samples_and_refuses_to_save(fitted, tmp_path):
    model, truth = fitted
    cov = truth.sample(2, seed=9)[["age", "sex", "site"]]
    s = model.sample(cov, n=50)
    assert len(s) == 100 and np.isfinite(s[truth.idp_names].to_numpy()).all()
    with pytest.raises(InputError, match="not saved"):
        model.save(tmp_path / "x")


def test_fit_and_predictions_leave_no_folder_behind(tmp_path, monkeypatch):
    """PCNtoolkit makes folders on every fit and predict; the adapter's go in temporary folders it removes, and
    none lands in the user's home or the working directory."""
    scratch, home, cwd = (tmp_path / name for name in ("tmp", "home", "cwd"))
    for folder in (scratch, home, cwd):
        folder.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PCN_SAVE_DIR", raising=False)
    monkeypatch.chdir(cwd)
    truth = SyntheticTruth.create(d=2, n_sites=2, seed=5)
    df = truth.sample(200, seed=6)
    model = PCNToolkitBLR().fit(df, age="age", covariates=["sex", "site"], idps=truth.idp_names)
    model.score(df.head(5))
    model.centiles([40.0], quantiles=(0.5,))
    assert [list(folder.iterdir()) for folder in (scratch, home, cwd)] == [[], [], []]
