import numpy as np
import pytest
from scipy import special, stats

from normcore.tabular.gaussianisation import IDPTransformer
from normcore.tabular.heavy_tails import (
    age_bins,
    heavier_than_normal,
    heavy_sides,
    n_age_bins,
    pwm_gpd,
    tail_excess,
    tail_scores,
)


def test_pwm_recovers_a_generalised_pareto_shape_and_scale():
    excesses = np.sort(stats.genpareto.rvs(0.25, scale=2.0, size=20000, random_state=0))
    xi, sigma = pwm_gpd(excesses)
    assert xi == pytest.approx(0.25, abs=0.03) and sigma == pytest.approx(2.0, rel=0.05)


def test_normal_tails_are_rarely_called_heavy_and_student_t_tails_nearly_always():
    """The normal tails' statistic (its mean and spread in the module docstring) sets a 1% test: 2000 normal values
    in four groups are called heavy on about 1% of sides, Student-t(3) values on nearly all."""
    normal = t3 = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        x, groups = rng.standard_normal(2000), rng.integers(0, 4, 2000)
        normal += heavier_than_normal(x, groups, True) + heavier_than_normal(x, groups, False)
    for seed in range(25):
        x = stats.t.rvs(3, size=4000, random_state=seed)
        groups = np.random.default_rng(seed).integers(0, 4, 4000)
        t3 += heavier_than_normal(x, groups, True) + heavier_than_normal(x, groups, False)
    assert normal <= 6  # of 300 sides (1% expected)
    assert t3 >= 45  # of 50 sides


def test_a_shape_that_moves_with_age_is_heavy_pooled_but_not_within_age_bins():
    """A two-component mixture whose weight rises with age, standardised by its exact age-wise mean and SD: pooled
    over ages (groups unrelated to age) its tails look heavy; within age bins each age's light tail shows."""
    pooled = binned = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        age = rng.uniform(15, 95, 5000)
        w = special.expit((age - 50) / 8)
        v = np.where(rng.random(5000) < w, rng.normal(1.2, 0.5, 5000), rng.normal(-1.2, 0.5, 5000))
        r = (v - 1.2 * (2 * w - 1)) / np.sqrt(0.25 + 1.44 * (1 - (2 * w - 1) ** 2))
        unrelated = rng.integers(0, 4, 5000)
        pooled += heavier_than_normal(r, unrelated, True) + heavier_than_normal(r, unrelated, False)
        binned += heavier_than_normal(r, age_bins(age), True) + heavier_than_normal(r, age_bins(age), False)
    assert pooled >= 14 and binned <= 2  # of 20 sides


def test_too_few_values_per_age_bin_are_not_tested():
    x = stats.t.rvs(2, size=300, random_state=0)  # 2 bins of 150: 8 excesses each, under the minimum
    assert not heavier_than_normal(x, age_bins(np.arange(300.0)), True)


def test_age_bins_hold_equal_numbers_of_rows_when_ages_cluster_and_fewer_bins_for_small_tables():
    """Bins by age rank: 60% of a cohort aged exactly 20 still gives four equal bins (at age quantiles two bins
    were empty and one held 75% of the rows), in age order; 2 bins below 1500 rows, 3 below 2000, then 4."""
    rng = np.random.default_rng(0)
    ages = np.where(rng.random(3000) < 0.6, 20.0, rng.integers(21, 80, 3000).astype(float))
    bins = age_bins(ages)
    assert np.bincount(bins).tolist() == [750, 750, 750, 750]
    assert all(ages[bins == b].max() <= ages[bins == b + 1].min() for b in range(3))
    assert [n_age_bins(n) for n in (400, 1000, 1499, 1500, 1999, 2000, 40000)] == [2, 2, 2, 3, 3, 4, 4]


def test_a_table_of_1000_rows_keeps_its_false_flags_and_sees_more_heavy_tails_in_two_age_bins():
    """1000 rows (two bins of 500 by default): normal sides flagged about 1% of the time, Student-t(3) sides on
    21 of 50 (13 of 50 in four bins of 250)."""
    normal = t3 = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        normal += sum(heavy_sides(rng.standard_normal(1000), age_bins(rng.uniform(20, 80, 1000))))
    for seed in range(25):
        ages = np.random.default_rng(seed).uniform(20, 80, 1000)
        t3 += sum(heavy_sides(stats.t.rvs(3, size=1000, random_state=seed), age_bins(ages)))
    assert normal <= 6  # of 300 sides
    assert t3 >= 18  # of 50 sides


def test_a_heavy_tailed_measure_maps_far_values_near_their_exact_normal_scores():
    """A Student-t(4) measure: with age bins its sides follow a generalised Pareto tail beyond the anchors, so values
    10 and 50 units out (scale 1) map near their exact normal scores, where the line read -50 as about -14; a normal
    measure keeps its line; the map stays continuous, increasing and invertible."""
    rng = np.random.default_rng(0)
    ages = rng.uniform(20, 80, 4000)
    y = np.c_[stats.t.rvs(4, size=4000, random_state=1), rng.standard_normal(4000)]
    heavy = IDPTransformer().fit(y, groups=age_bins(ages))
    line = IDPTransformer().fit(y)
    assert heavy.params[0]["tail_gpd"][0] is not None and "tail_gpd" not in heavy.params[1]
    assert "tail_gpd" not in line.params[0]
    far = np.array([-50.0, -10.0])
    exact = special.ndtri(stats.t.cdf(far, 4))
    z_heavy = heavy.transform(np.c_[far, far])[:, 0]
    z_line = line.transform(np.c_[far, far])[:, 0]
    assert np.abs(z_heavy - exact).max() < 0.5 and z_line[0] < exact[0] - 8
    grid = np.linspace(-200, 200, 4001)
    z = heavy.transform(np.c_[grid, grid])
    assert (np.diff(z[:, 0]) > 0).all()
    anchor = heavy.params[0]["x"][0]
    step = heavy.transform(np.array([[anchor - 1e-9, 0.0], [anchor + 1e-9, 0.0]]))[:, 0]
    assert abs(step[1] - step[0]) < 1e-6
    np.testing.assert_allclose(heavy.inverse_transform(z), np.c_[grid, grid], atol=1e-8)


def test_tail_scores_and_excesses_are_inverse_and_start_at_the_anchor():
    tail = [0.3, 0.7, float(special.log_ndtr(-1.645))]
    e = np.array([0.0, 0.5, 5.0, 1e3, 1e8])
    z = tail_scores(e, tail)
    assert z[0] == pytest.approx(1.645) and (np.diff(z) > 0).all() and np.isfinite(z).all()
    np.testing.assert_allclose(tail_excess(z, tail), e, rtol=1e-8, atol=1e-10)
