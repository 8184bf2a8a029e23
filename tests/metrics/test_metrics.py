"""Known-answer tests of every evaluation metric."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from normcore import metrics as M


def test_ace_against_truth_is_mean_absolute_centile_gap():
    q = np.array([0.1, 0.5, 0.9])
    assert M.ace_against_truth(q, np.array([0.1, 0.5, 0.9])) == 0
    assert M.ace_against_truth(q, np.array([0.2, 0.5, 0.8])) == pytest.approx(0.2 / 3)


def test_ace_heldout_is_small_for_the_true_quantiles_and_large_for_shifted_ones():
    rng = np.random.default_rng(0)
    held = pd.DataFrame({"age": rng.uniform(20, 80, 20000)})
    held["y"] = held.age * 0.1 + rng.standard_normal(len(held))
    ages = np.arange(20, 81.0)
    rows = [pd.DataFrame({"age": ages, "idp": "y", "quantile": q, "value": ages * 0.1 + stats.norm.ppf(q) + shift})
            for q in (0.1, 0.5, 0.9) for shift in [0.0]]
    good = M.ace_heldout(pd.concat(rows), held, "age", "y")
    shifted = pd.concat(rows).assign(value=lambda d: d.value + 1.0)
    assert good < 0.015
    assert M.ace_heldout(shifted, held, "age", "y") > 0.15


def test_coverage_and_its_standard_error():
    u = (np.arange(10000) + 0.5) / 10000
    cov = M.coverage(u)
    np.testing.assert_allclose(cov["coverage"], [0.5, 0.9, 0.95], atol=1e-3)
    assert cov.loc[2, "se"] == pytest.approx(np.sqrt(0.95 * 0.05 / 10000))


def test_pit_ks_detects_non_uniform_centiles():
    rng = np.random.default_rng(1)
    assert M.pit_ks(rng.random(2000))[1] > 0.01
    assert M.pit_ks(rng.random(2000) ** 1.5)[1] < 1e-6


def test_benjamini_hochberg_matches_the_textbook_example():
    p = np.array([0.01, 0.02, 0.03, 0.04, 0.2])
    # sorted p_(k) <= k/m * alpha with alpha=0.05, m=5: thresholds 0.01..0.05 -> first four rejected
    np.testing.assert_array_equal(M.benjamini_hochberg(p, 0.05), [True, True, True, True, False])


def test_ks_by_age_band_flags_a_shifted_band_only():
    rng = np.random.default_rng(2)
    real = pd.DataFrame({"age": rng.uniform(20, 80, 3000), "a": rng.standard_normal(3000)})
    gen = pd.DataFrame({"age": rng.uniform(20, 80, 3000), "a": rng.standard_normal(3000)})
    gen.loc[gen.age >= 60, "a"] += 1.0
    res = M.ks_by_age_band(real, gen, "age", ["a"], [(20, 40), (40, 60), (60, 80)])
    assert res["reject_bh"].tolist() == [False, False, True]


def test_classic_metrics_known_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert M.explained_variance(y, y) == 1 and M.smse(y, y) == 0
    assert M.smse(y, np.full(4, y.mean())) == pytest.approx(1.0)
    zeros = np.zeros(4)  # a measure all 0 in the scored rows: undefined, not infinite (means skip it)
    assert np.isnan([M.explained_variance(zeros, y), M.smse(zeros, y), M.pearson_rho(zeros, y)]).all()
    assert M.pearson_rho(y, 2 * y + 1) == pytest.approx(1.0)
    # MSLL of the trivial model itself is 0; a better predictive density is negative
    assert M.msll(y, np.full(4, y.mean()), np.full(4, y.var()), y.mean(), y.var()) == pytest.approx(0.0)
    assert M.msll(y, y, np.full(4, 0.01), y.mean(), y.var()) < 0


def test_point_mass_log_loss_counts_the_bounds_and_takes_a_density_between():
    """-log p at a bound (or beyond it), -log(body share) plus the body's Gaussian loss between; no bound (NaN):
    every value is the body's."""
    y = np.array([0.0, -1.0, 3.0, 10.0, 12.0])
    loss = M.point_mass_log_loss(y, 0.0, 10.0, np.full(5, 0.9), np.full(5, 0.05), np.full(5, 3.0), np.full(5, 4.0))
    body = -np.log(0.05) + 0.5 * np.log(2 * np.pi * 4.0)
    np.testing.assert_allclose(loss, [-np.log(0.9), -np.log(0.9), body, -np.log(0.05), -np.log(0.05)])
    unbounded = M.point_mass_log_loss(y, np.nan, np.nan, np.zeros(5), np.zeros(5), np.full(5, 3.0), np.full(5, 4.0))
    np.testing.assert_allclose(unbounded, M.gaussian_log_loss(y, 3.0, 4.0))


def test_z_summary_of_standard_normal():
    z = np.random.default_rng(3).standard_normal(200000)
    s = M.z_summary(z)
    assert abs(s["z_mean"]) < 0.01 and abs(s["z_sd"] - 1) < 0.01 and abs(s["z_skew"]) < 0.02
    assert abs(s["z_kurtosis"]) < 0.05 and abs(s["frac_abs_z_gt_1.96"] - 0.05) < 0.003


def test_frobenius_gap_zero_for_same_dependence_and_positive_for_independent():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((5000, 3))
    corr = z @ np.linalg.cholesky(np.array([[1, 0.8, 0.5], [0.8, 1, 0.4], [0.5, 0.4, 1]])).T
    assert M.frobenius_gap(corr, np.exp(corr)) == pytest.approx(0.0, abs=1e-12)  # ranks unchanged
    gap = M.frobenius_gap(corr, z)
    assert gap == pytest.approx(np.sqrt(2 * (0.79**2 + 0.48**2 + 0.38**2) / 6), abs=0.03)


def test_product_of_marginals_keeps_marginals_and_removes_dependence():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(4000)
    df = pd.DataFrame({"age": rng.uniform(20, 80, 4000), "a": a, "b": a + 0.1 * rng.standard_normal(4000)})
    pom = M.product_of_marginals(df, "age", ["a", "b"])
    np.testing.assert_array_equal(np.sort(pom.a), np.sort(df.a))
    assert abs(stats.spearmanr(pom.a, pom.b).statistic) < 0.05
    for _, rows in df.groupby(np.floor(df.age / 5.0)).groups.items():  # values move only within their age bin
        np.testing.assert_array_equal(np.sort(pom.loc[rows, "b"]), np.sort(df.loc[rows, "b"]))
    pd.testing.assert_series_equal(pom.age, df.age)


def test_energy_distance_and_mmd_are_zero_for_identical_and_grow_with_shift():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((300, 2))
    assert M.energy_distance(x, x) == pytest.approx(0, abs=1e-12) and M.mmd_rbf(x, x) == pytest.approx(0, abs=1e-12)
    # energy distance between N(0,1) and N(d,1) in 1D: 2E|X-Y| - 2/sqrt(pi), E|X-Y| for N(d, 2)
    d = 1.0
    e_xy = np.sqrt(2) * np.sqrt(2 / np.pi) * np.exp(-d * d / 4) + d * (1 - 2 * stats.norm.cdf(-d / np.sqrt(2)))
    big = rng.standard_normal((3000, 1))
    assert M.energy_distance(big, big[::-1] * 0 + rng.standard_normal((3000, 1)) + d) == pytest.approx(
        2 * e_xy - 2 * 2 / np.sqrt(np.pi), abs=0.03)
    assert M.mmd_rbf(x, x + 1.0) > M.mmd_rbf(x, x + 0.2) > 0


def test_memorisation_detects_copied_training_rows():
    rng = np.random.default_rng(7)
    train, hold = rng.standard_normal((500, 3)), rng.standard_normal((500, 3))
    fresh = M.memorisation_report(rng.standard_normal((300, 3)), train, hold)
    copied = M.memorisation_report(train[:300] + 1e-9, train, hold)
    assert 0.8 < fresh["ratio"] < 1.25 and abs(fresh["share_closer_to_train"] - 0.5) < 0.1
    assert copied["ratio"] < 0.01 and copied["share_closer_to_train"] == 1.0 and copied["near_duplicates"] == 1.0


def test_auc_ci_and_welch_on_known_separation():
    rng = np.random.default_rng(8)
    controls, patients = rng.standard_normal(2000), rng.standard_normal(2000) + 1.0
    score = np.r_[controls, patients]
    y = np.r_[np.zeros(2000, bool), np.ones(2000, bool)]
    auc, lo, hi = M.auc_with_ci(score, y, n_boot=200)
    assert auc == pytest.approx(stats.norm.cdf(1 / np.sqrt(2)), abs=0.02) and lo < auc < hi
    t, p = M.welch_t(score, y)
    assert t > 20 and p < 1e-50


def test_auc_equals_sklearn_with_ties_and_its_bootstrap_covers_resampled_aucs():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(11)
    y = rng.random(300) < 0.3
    score = rng.integers(0, 6, 300).astype(float) + 0.5 * y  # many ties
    auc, lo, hi = M.auc_with_ci(score, y, n_boot=400)
    assert auc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    # the interval is the spread of AUCs of stratified resamples, as one sklearn call per resample gives it
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    loop = [roc_auc_score(y[i], score[i]) for i in
            (np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)] for _ in range(400))]
    assert lo == pytest.approx(np.quantile(loop, 0.025), abs=0.02)
    assert hi == pytest.approx(np.quantile(loop, 0.975), abs=0.02)
    with pytest.raises(ValueError, match="both patients and controls"):
        M.auc_with_ci(score, np.zeros(300, bool))


def test_top_k_mean_abs():
    z = np.array([[0.0, -3.0, 1.0, 2.0]])
    assert M.top_k_mean_abs(z, 0.5)[0] == 2.5 and M.top_k_mean_abs(z, 0.01)[0] == 3.0


def test_separation_table_ranks_shifted_idp_first():
    rng = np.random.default_rng(9)
    n = 400
    y = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    z = rng.standard_normal((2 * n, 3))
    z[y, 1] += 2.0
    scores = pd.DataFrame({f"z:i{j}": z[:, j] for j in range(3)})
    tab = M.separation_table(scores, ["i0", "i1", "i2"], y, n_boot=50).set_index("score")
    assert tab.loc["abs_z:i1", "auc"] > 0.75 and abs(tab.loc["abs_z:i0", "auc"] - 0.5) < 0.07
    assert tab.loc["abs_z:i1", "cohen_d"] == pytest.approx(M.cohen_d(np.abs(z[y, 1]), np.abs(z[~y, 1]))[0])
    assert tab.loc["abs_z:i1", "cohen_d"] > 1.0 and abs(tab.loc["abs_z:i0", "cohen_d"]) < 0.2


def test_cohen_d_matches_hand_computation():
    rng = np.random.default_rng(0)
    p, c = rng.normal(-1.0, 1.0, 50), rng.normal(0.0, 1.0, 80)
    d, lo, hi = M.cohen_d(np.r_[p, np.nan], c)  # a missing value is left out
    pooled = np.sqrt((49 * p.var(ddof=1) + 79 * c.var(ddof=1)) / 128)
    assert d == pytest.approx((p.mean() - c.mean()) / pooled)
    assert lo < d < hi and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(130 / 4000 + d**2 / 260))
    assert np.isnan(M.cohen_d(p[:1], c)).all() and np.isnan(M.cohen_d(np.ones(5), np.ones(5))).all()


def test_ace_from_centiles_zero_for_uniform_and_large_for_skewed():
    rng = np.random.default_rng(10)
    ages = rng.uniform(20, 80, 20000)
    assert M.ace_from_centiles(rng.random(20000), ages) < 0.01
    assert M.ace_from_centiles(rng.random(20000) ** 2, ages) > 0.1


def test_spearman_matrix_with_missing_values_uses_each_pair_s_common_rows():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 3))
    x[:, 1] += x[:, 0]
    x[:100, 0] = np.nan
    x[200:, 2] = np.nan
    s = M.spearman_matrix(x)
    assert s[0, 1] == pytest.approx(stats.spearmanr(x[100:, 0], x[100:, 1]).statistic, abs=1e-12)
    assert s[1, 2] == pytest.approx(stats.spearmanr(x[:200, 1], x[:200, 2]).statistic, abs=1e-12)
    assert s[0, 2] == pytest.approx(stats.spearmanr(x[100:200, 0], x[100:200, 2]).statistic, abs=1e-12)


def test_frobenius_gap_leaves_out_pairs_with_a_constant_measure():
    """A measure all 0 in the rows (every value at a floor) has no rank correlation: its pairs are left out, so the
    gap is the other pairs' (before: NaN for the whole table)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 3))
    x[:, 1] += x[:, 0]
    with_zero = np.c_[x, np.zeros(300)]
    assert M.frobenius_gap(with_zero, with_zero) == 0.0
    assert M.frobenius_gap(with_zero, rng.standard_normal((300, 4))) == pytest.approx(
        M.frobenius_gap(x, rng.standard_normal((300, 3))), abs=0.05)
