"""The multivariate score's calibration on out-of-sample rows: the scaled chi-square, its z, its dependence on M,
and how a diffusion model makes, keeps and uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from normcore import NormativeDiffusion, load_model, make_synthetic
from normcore._utils.errors import InputError
from normcore._utils.progress import Cancelled, Progress
from normcore.tabular.diffusion_model import CALIBRATION_STAGE
from normcore.tabular.multivariate_calibration import MIN_CALIBRATION_ROWS, MultivariateCalibration, cross_fitted
from normcore.tabular.scoring import mahalanobis
from tests.conftest import TINY


def _calibration(scale: float = 3.0, dof: float = 40.0, n: int = 4000, seed: int = 0) -> MultivariateCalibration:
    d2 = scale * np.random.default_rng(seed).chisquare(dof, n)
    return MultivariateCalibration.fit(d2, 0.9 * d2, n_idps=100, n_samples=1000)


def test_fit_recovers_a_scaled_chi_square_and_its_z_is_standard_normal():
    cal = _calibration()
    assert cal.scale == pytest.approx(3.0, rel=0.05) and cal.dof == pytest.approx(40.0, rel=0.05)
    assert cal.n_rows == 4000 and cal.n_idps == 100
    fresh = 3.0 * np.random.default_rng(1).chisquare(40.0, 20000)
    z = cal.z(fresh, np.full(len(fresh), 100))
    assert np.mean(z > stats.norm.ppf(0.95)) == pytest.approx(0.05, abs=0.01)
    assert np.mean(z > stats.norm.ppf(0.99)) == pytest.approx(0.01, abs=0.004)
    assert abs(np.median(z)) < 0.05


def test_too_few_or_unspread_rows_give_no_calibration():
    d2 = np.random.default_rng(0).chisquare(10, MIN_CALIBRATION_ROWS - 1)
    assert MultivariateCalibration.fit(d2, d2, 10, 1000) is None
    d2 = np.r_[d2, np.nan, -1.0]  # NaN and non-positive values do not count
    assert MultivariateCalibration.fit(d2, d2, 10, 1000) is None
    assert MultivariateCalibration.fit(np.full(100, 5.0), np.full(100, 5.0), 10, 1000) is None


def test_z_is_increasing_keeps_extremes_distinct_and_scales_with_the_observed_idps():
    cal = _calibration()
    d2 = np.array([10.0, 100.0, 120.0, 1e3, 1.5e3, 2e3, np.nan])  # chi2 z would stop at 8.2 (p 1e-16)
    z = cal.z(d2, np.full(len(d2), 100))
    assert np.all(np.diff(z[:-1]) > 0) and np.isfinite(z[:-1]).all() and np.isnan(z[-1])
    half = cal.z(np.array([60.0]), np.array([50]))  # half the IDPs: a scale * chi2(dof / 2)
    expected = stats.norm.ppf(stats.chi2.cdf(60.0 / cal.scale, cal.dof / 2))
    assert half[0] == pytest.approx(expected, abs=1e-6)
    assert np.isnan(cal.z(np.array([5.0]), np.array([0]))[0])


def test_the_scale_follows_the_number_of_samples_through_both_measured_means():
    cal = MultivariateCalibration(scale=2.0, dof=50.0, n_idps=100, n_rows=200, n_samples=1000,
                                  mean_d2=100.0, mean_d2_half=90.0)
    assert cal.scale_at(None) == cal.scale_at(1000) == 2.0
    assert cal.scale_at(500) == pytest.approx(2.0 * 90.0 / 100.0)  # the curve passes through the half-M mean
    assert 2.0 < cal.scale_at(2000) < cal.scale_at(4000) < 2.0 * 100.0 / 90.0 * 1.2  # grows, and settles
    assert cal.scale_at(10**9) == cal.scale_at(8000)  # taken within [M / 8, 8 M]
    assert cal.scale_at(1) == cal.scale_at(125) > 0


def test_round_trip_and_a_damaged_card_is_refused():
    cal = _calibration()
    assert MultivariateCalibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(TypeError, match="must be positive"):
        MultivariateCalibration.from_dict({**cal.to_dict(), "scale": -1.0})


@pytest.fixture(scope="module")
def calibrated_model():
    df, truth = make_synthetic(700, d=4, seed=5)
    model = NormativeDiffusion(**TINY).fit(df, age="age", covariates=["sex"], idps=truth.idp_names)
    return model, truth


def test_a_fit_calibrates_on_its_validation_rows_and_scores_with_it(calibrated_model, tmp_path):
    model, truth = calibrated_model
    cal = model.multivariate_calibration_
    assert cal is not None and cal.n_rows == 70 and cal.n_idps == 4 and cal.n_samples == model.n_samples
    fresh = truth.sample(400, seed=6)
    scores = model.score(fresh)
    d2 = scores["multivariate_d2"].to_numpy()
    np.testing.assert_allclose(scores["multivariate_z"], cal.z(d2, np.full(len(d2), 4)))
    # the validation rows were scored as new subjects: their d2 is spread like fresh subjects' (the mean of 70 rows'
    # d2 has a standard error of ~9%: its ratio to 400 fresh rows' was 0.80-1.08 over make_synthetic seeds 5-10)
    assert cal.mean_d2 == pytest.approx(d2.mean(), rel=0.25)
    fewer = model.score(fresh, n_samples=100)
    np.testing.assert_allclose(fewer["multivariate_z"], cal.z(fewer["multivariate_d2"], np.full(len(d2), 4), 100))
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.multivariate_calibration_ == cal
    np.testing.assert_allclose(loaded.score(fresh)["multivariate_z"], scores["multivariate_z"])
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    card["multivariate_calibration"]["dof"] = 0.0
    (tmp_path / "m" / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="malformed"):
        load_model(tmp_path / "m")


def test_a_fit_with_few_validation_rows_keeps_the_chi_square(tiny_model, cohort):
    assert tiny_model.multivariate_calibration_ is None  # 30 validation rows
    df, truth = cohort
    scores = tiny_model.score(df.head(20))
    expected = stats.norm.ppf(stats.chi2.cdf(scores["multivariate_d2"], len(truth.idp_names)))
    np.testing.assert_allclose(scores["multivariate_z"], expected, atol=1e-8)


def test_the_calibration_reports_its_own_stage_and_a_cancel_during_it_leaves_no_model():
    df, truth = make_synthetic(700, d=4, seed=5)
    stages: list[str] = []
    progress = Progress()

    def record(stage, done, total, **info):
        stages.append(stage)
        if stage == CALIBRATION_STAGE:
            progress.cancel()

    progress.callback = record
    model = NormativeDiffusion(**TINY)
    with pytest.raises(Cancelled):
        model.fit(df, age="age", covariates=["sex"], idps=truth.idp_names, progress=progress)
    assert "train" in stages and stages[-1] == CALIBRATION_STAGE and "sample" not in stages
    assert not model.is_fitted


def test_rows_over_fewer_idps_calibrate_by_the_rule_z_scores_them_with():
    """d2 of a row over D' of D IDPs ~ scale * chi2(dof * D' / D): a fit on such rows recovers scale and dof, and
    complete rows alone fit exactly as without ``n_observed``."""
    rng = np.random.default_rng(2)
    n_obs = rng.integers(60, 101, 6000)
    d2 = 3.0 * rng.chisquare(40.0 * n_obs / 100)
    cal = MultivariateCalibration.fit(d2, 0.9 * d2, n_idps=100, n_samples=1000, n_observed=n_obs)
    assert cal.scale == pytest.approx(3.0, rel=0.05) and cal.dof == pytest.approx(40.0, rel=0.05)
    assert cal.mean_d2 == pytest.approx(np.mean(d2 * 100 / n_obs))
    fresh_obs = rng.integers(60, 101, 20000)
    z = cal.z(3.0 * rng.chisquare(40.0 * fresh_obs / 100), fresh_obs)
    assert np.mean(z > stats.norm.ppf(0.95)) == pytest.approx(0.05, abs=0.01)
    complete = 3.0 * rng.chisquare(40.0, 3000)
    assert MultivariateCalibration.fit(complete, complete, 100, 1000, n_observed=np.full(3000, 100)) == \
        MultivariateCalibration.fit(complete, complete, 100, 1000)


def test_a_fit_on_incomplete_rows_calibrates_on_validation_rows_missing_some_idps():
    """With 40% of the values missing, few validation rows are complete; every one with an observed IDP counts, and
    fresh subjects' multivariate z (over their observed IDPs) is about standard normal in its upper tail."""
    df, truth = make_synthetic(700, d=4, seed=5)
    values = df[truth.idp_names].to_numpy(float).copy()
    values[np.random.default_rng(0).random(values.shape) < 0.4] = np.nan
    gappy = df.assign(**dict(zip(truth.idp_names, values.T, strict=True)))
    model = NormativeDiffusion(**TINY).fit(gappy, age="age", covariates=["sex"], idps=truth.idp_names)
    cal = model.multivariate_calibration_
    assert cal is not None and cal.n_rows == model.training_summary_["n_validation"]  # about 9 of them complete
    fresh = truth.sample(2000, seed=6)
    z = model.score(fresh)["multivariate_z"].to_numpy()
    assert np.mean(z > stats.norm.ppf(0.95)) == pytest.approx(0.05, abs=0.02)


def test_scores_with_fewer_samples_come_from_the_first_samples_of_one_draw(tiny_model, cohort):
    """The calibration scores the validation rows with M samples and with M / 2 from one draw: the M scores are the
    scoring's own (identical), and the M / 2 scores are those against the first M / 2 of each point's samples."""
    df, truth = cohort
    rows = df.head(40)
    age, codes = tiny_model._covariates_of(rows, "rows")
    y = rows[truth.idp_names].to_numpy(float)
    m = 64
    full, half = tiny_model._score_with_sample_counts(y, age, codes, (m, m // 2), 7, None)
    alone = tiny_model._score_core(y, age, codes, m, 7, None)
    for a, b in zip(full[:3], alone[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full[3].per_point, alone[3].per_point)
    u_age, u_codes, pair, weight, _ = tiny_model._score_points(age, codes)
    drawn = tiny_model._draw(u_age, u_codes, m, 7, to_values=False).numpy()[:, :m // 2]  # one chunk: seed 7
    x = tiny_model._to_latent(y, age, codes)
    samples = drawn[pair[:, 0]]  # (rows, M / 2, D): each row's nearest point's first M / 2 samples
    lo, hi = np.quantile(samples, [0.1, 0.9], axis=1)
    body = (x > lo) & (x < hi) & (weight[:, 1] == 0)[:, None]  # one point, away from the tail model's reach
    assert body.sum() >= 20 and not np.array_equal(half[0], full[0])
    ranks = (samples < x[:, None, :]).sum(axis=1)  # the randomised PIT's count below, over M / 2 + 1
    np.testing.assert_array_equal(np.floor(half[0][body] * (m // 2 + 1)), ranks[body])


def test_cross_fitted_calibration_scores_new_rows_at_the_nominal_rate():
    """A correlation of 300 rows over 60 IDPs: new rows' d2 under it put 35% above chi2(60)'s 95th centile; the
    calibration cross-fitted on the 300 rows themselves puts 3-8% there (the calibration is estimated from 300 rows)."""
    rng = np.random.default_rng(0)
    d = 60
    a = rng.standard_normal((d, d))
    cov = a @ a.T / d + np.eye(d)
    chol = np.linalg.cholesky(cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))))
    z = rng.standard_normal((300, d)) @ chol.T
    d2, chi2_scale = mahalanobis(rng.standard_normal((4000, d)) @ chol.T, np.corrcoef(z, rowvar=False))
    calibrated = cross_fitted(z).z(d2, np.full(len(d2), d))
    assert np.mean(chi2_scale > 1.645) > 0.25
    assert 0.03 < np.mean(calibrated > 1.645) < 0.08 and np.mean(calibrated > 2.326) < 0.025
    assert cross_fitted(z[:60]) is None  # a fold's correlation of 54 rows over 60 IDPs is singular
