"""The evaluation suite's summaries computed from score tables."""

import numpy as np
import pandas as pd
import pytest
from scipy import special

from normcore.tabular.evaluation import multivariate_calibration


def test_multivariate_calibration_counts_controls_beyond_the_scores_centiles():
    centiles = (np.arange(1000) + 0.5) / 1000  # exactly uniform: the nominal shares
    scores = pd.DataFrame({"multivariate_z": np.r_[special.ndtri(centiles), np.nan]})
    cal = multivariate_calibration(scores)
    assert cal["n"] == 1000  # the missing score is left out
    assert cal["share_above_95"] == pytest.approx(0.05) and cal["share_above_99"] == pytest.approx(0.01)
    assert abs(cal["median_z"]) < 0.01 and cal["pit_ks_p"] > 0.99
    wide = multivariate_calibration(pd.DataFrame({"multivariate_z": 1.5 * special.ndtri(centiles)}))
    assert wide["share_above_95"] == pytest.approx(0.136, abs=0.002) and wide["pit_ks_p"] < 1e-6
    assert multivariate_calibration(pd.DataFrame({"z:a": [0.1]})) == {"n": 0}


def test_curve_ace_against_a_truth_with_sites_at_the_first_site_or_at_every_site():
    from normcore import make_model
    from normcore.tabular.evaluation import ace_against_synthetic_truth
    from normcore.tabular.synthetic import SyntheticTruth

    truth = SyntheticTruth.create(d=2, n_sites=3, seed=5)
    model = make_model("shash-baseline").fit(truth.sample(1500, seed=6), age="age", covariates=["sex", "site"],
                                             idps=truth.idp_names)
    first = ace_against_synthetic_truth(model, truth, step=10.0)
    every = ace_against_synthetic_truth(model, truth, step=10.0, all_sites=True)
    assert "ace_per_site" not in first and list(every["ace_per_site"]) == truth.site_names
    assert every["ace_per_site"]["site_01"] == pytest.approx(first["ace"])
    assert every["ace"] == pytest.approx(np.mean(list(every["ace_per_site"].values())))
    assert len(set(every["ace_per_site"].values())) == 3  # each site's own curves against its own truth
    assert 0 < every["ace"] < 0.1


def test_the_suite_reports_finite_metrics_for_tables_missing_some_idp_values():
    """Missing values leave each metric to the rows where what it needs is observed, never NaN for the IDP."""
    from normcore import make_model
    from normcore.tabular.evaluation import evaluate
    from normcore.tabular.synthetic import SyntheticTruth

    truth = SyntheticTruth.create(d=3, seed=7)
    train, holdout = truth.sample(600, seed=8), truth.sample(400, seed=9)
    model = make_model("shash-baseline").fit(train, age="age", covariates=["sex"], idps=truth.idp_names)

    def gappy(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
        values = frame[truth.idp_names].to_numpy(float).copy()
        values[np.random.default_rng(seed).random(values.shape) < 0.2] = np.nan
        return frame.assign(**dict(zip(truth.idp_names, values.T, strict=True)))

    report = evaluate(model, gappy(holdout, 1), train=gappy(train, 2), n_samples=200)
    for row in report["per_idp"]:
        assert all(np.isfinite(row[k]) for k in ("expv", "smse", "rho", "msll", "coverage95"))
    assert np.isfinite(report["dependence"]["frobenius_model"]) and np.isfinite(report["dependence"]["energy_model"])
    memo = report["memorisation"]
    assert np.isfinite(memo["ratio"]) and 250 < memo["n_train_rows"] < 350 and 150 < memo["n_reference_rows"] < 250


def test_the_suite_reports_its_sampling_stages_and_reuses_given_scores(tiny_model, cohort):
    """``progress`` hears each sampling stage (the dashboard shows them and may cancel); scores the caller already
    has give the same report without scoring again."""
    from normcore._utils.progress import Progress
    from normcore.tabular.evaluation import evaluate

    df, _ = cohort
    holdout = df.head(120)
    stages: list[str] = []
    report = evaluate(tiny_model, holdout, n_samples=64, progress=Progress(lambda stage, *a, **k: stages.append(stage)))
    assert {"scoring", "predictive moments", "samples for the dependence checks"} <= set(stages)
    scores = tiny_model.score(holdout, n_samples=64, seed=0)
    given = evaluate(tiny_model, holdout, n_samples=64, scores=scores)
    assert given["score_time_s"] is None and report["score_time_s"] > 0
    pd.testing.assert_frame_equal(pd.DataFrame(given["per_idp"]), pd.DataFrame(report["per_idp"]))
    assert given["aggregate"] == pytest.approx(report["aggregate"], nan_ok=True)
    with pytest.raises(ValueError, match="rows"):
        evaluate(tiny_model, holdout, n_samples=64, scores=scores.head(10))


def test_msll_scores_an_idp_with_a_point_mass_under_its_mixture(censored_cohort):
    """A point-mass IDP's MSLL compares the model's probabilities of the floor and its body with the training
    values' (recovered exactly from the card's mean, SD and shares); the Gaussian MSLL stays beside it, and IDPs
    without bounds have the one MSLL."""
    from normcore import make_model
    from normcore.tabular.evaluation import evaluate, point_mass_msll, summary_lines, training_mixture
    from normcore.tabular.predictive_mixture import PredictiveMixture

    train, holdout = censored_cohort(1500, 0), censored_cohort(600, 1)
    model = make_model("shash-baseline").fit(train, "age", ["sex"], ["absent", "often_zero", "normal"])
    p_floor, p_ceiling, body_mean, body_var = training_mixture(model, "absent")
    body = train.absent[train.absent > 0]
    assert p_floor == pytest.approx((train.absent == 0).mean()) and p_ceiling == 0
    assert body_mean == pytest.approx(body.mean()) and body_var == pytest.approx(body.var(ddof=0))
    assert training_mixture(model, "normal") is None  # no point mass

    y, n = holdout.absent.to_numpy(), len(holdout)
    p_zero = 0.95 - 0.15 * (holdout.age.to_numpy() - 20) / 60  # the truth's share at each age
    d = 3

    def mixture(share: np.ndarray) -> PredictiveMixture:
        return PredictiveMixture(np.array([0.0, 0.0, np.nan]), np.full(d, np.nan), np.tile(share[:, None], d),
                                 np.zeros((n, d)), np.full((n, d), body_mean), np.full((n, d), body_var))
    rows = np.ones(n, bool)
    assert point_mass_msll(y, mixture(np.full(n, p_floor)), 0, rows, (p_floor, 0.0, body_mean, body_var)) == 0
    assert point_mass_msll(y, mixture(p_zero), 0, rows, (p_floor, 0.0, body_mean, body_var)) < 0  # the truth's

    report = evaluate(model, holdout, n_samples=200)
    per_idp = {row["idp"]: row for row in report["per_idp"]}
    assert abs(per_idp["absent"]["msll"]) < 0.05 and np.isfinite(per_idp["absent"]["msll_gaussian"])
    assert per_idp["normal"]["msll"] == per_idp["normal"]["msll_gaussian"] < -0.1
    assert report["aggregate"]["msll_mean"] == pytest.approx(np.mean([r["msll"] for r in per_idp.values()]))
    assert any("Gaussian, as PCNtoolkit" in line for line in summary_lines(report))  # both, where they differ
