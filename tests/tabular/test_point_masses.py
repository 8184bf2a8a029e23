import numpy as np
import pandas as pd
import pytest
import torch
from scipy import special

from normcore.registry import load_model, make_model
from normcore.tabular.longitudinal import change_scores
from normcore.tabular.point_masses import (
    MIN_BODY,
    at_bounds,
    at_shared_masses,
    beyond_bounds_notes,
    bodies_without_spread,
    body_to_latent,
    bound_shares,
    clip_to_bounds,
    find_bounds,
    latent_bounds,
    latent_to_body,
    pooled_bodies,
    spread_beyond_bounds,
    truncated_quantile,
    truncated_scores,
)
from normcore.tabular.scoring import randomised_pit


def test_find_bounds_needs_a_shared_extreme_and_a_body():
    rng = np.random.default_rng(0)
    body = rng.normal(5, 1, 1000)
    floor_col = np.where(rng.random(1000) < 0.3, 0.0, body)
    few = np.r_[np.zeros(4), body[4:]]  # 4 rows at the minimum: under MIN_COUNT
    ceiling_col = np.minimum(body, 5.5)
    two_values = (rng.random(1000) < 0.5).astype(float)  # 0 / 1: no body between
    rare_body = np.r_[body[:2], np.zeros(998)]  # present in 2 rows only (a 5th ventricle)
    with_nan = np.where(rng.random(1000) < 0.2, np.nan, floor_col)
    single = np.r_[4.5, np.zeros(999)]  # one value off the floor
    equal = np.r_[np.full(3, 4.0), np.full(997, 9.0)]  # a ceiling of 9 and three equal values below it
    columns = np.c_[body, floor_col, few, ceiling_col, two_values, with_nan, rare_body, single, equal]
    floor, ceiling = find_bounds(columns)
    assert np.isnan(floor[[0, 2, 3, 4, 8]]).all() and (floor[[1, 5, 6, 7]] == 0.0).all()
    assert np.isnan(ceiling[[0, 1, 2, 4, 5, 6, 7]]).all() and ceiling[3] == 5.5 and ceiling[8] == 9.0
    shares = bound_shares(np.c_[floor_col, ceiling_col], floor[[1, 3]], ceiling[[1, 3]])
    assert shares[0, 0] == pytest.approx((floor_col == 0).mean())
    assert shares[1, 1] == pytest.approx((body >= 5.5).mean())
    assert MIN_BODY == 1
    names = ["body", "floor", "few", "ceiling", "two", "nan", "rare", "single", "equal"]
    warned = bodies_without_spread(columns, names)
    assert len(warned) == 2
    assert warned[0].startswith("single: 99.9% of the training values are 0 and the only other value is 4.5, which "
                                "gives no spread: a spread of 4.5 (the distance to the bound) is assumed")
    assert warned[1].startswith("equal: 99.7% of the training values are 9 and the 3 other values are all 4, which "
                                "gives no spread: a spread of 5 ")
    spreads = pooled_bodies(np.where((columns == floor) | (columns == ceiling), np.nan, columns), floor, ceiling)
    assert spreads[7] == (4.5, 4.5) and spreads[8] == (4.0, 5.0) and spreads[6][1] == pytest.approx(body[:2].std())


def test_body_map_round_trips_and_gives_the_bounds_their_share():
    z = np.array([-6.0, -2.0, -0.5, 0.0, 0.5, 2.0, 6.0, np.nan])
    np.testing.assert_allclose(body_to_latent(z, 0.0, 0.0), z)  # no point mass: the identity
    for p_floor, p_ceiling in ((0.9, 0.0), (0.3, 0.1), (0.0, 0.2)):
        x = body_to_latent(z, p_floor, p_ceiling)
        lo, hi = latent_bounds(p_floor, p_ceiling)
        assert (x[:-1] > lo).all() and (x[:-1] < hi).all() and np.isnan(x[-1])
        np.testing.assert_allclose(latent_to_body(x, p_floor, p_ceiling)[:-1], z[:-1], atol=1e-6)
        assert special.ndtr(body_to_latent(np.array([0.0]), p_floor, p_ceiling))[0] == pytest.approx(
            p_floor + (1 - p_floor - p_ceiling) / 2)
        edges = latent_to_body(np.array([lo - 0.1 if p_floor else -5.0, hi + 0.1 if p_ceiling else 5.0]), p_floor,
                               p_ceiling)
        assert edges[0] == -np.inf if p_floor else np.isfinite(edges[0])
        assert edges[1] == np.inf if p_ceiling else np.isfinite(edges[1])


def test_truncated_scores_are_the_truncated_normals_normal_scores_far_out_too_and_invert():
    z = np.array([-3.0, -1.0, 0.0, 0.7, 2.0, 40.0, np.nan])
    t = truncated_scores(z, -1.5, np.inf)
    direct = special.ndtri((special.ndtr(z[1:5]) - special.ndtr(-1.5)) / special.ndtr(1.5))
    np.testing.assert_allclose(t[1:5], direct, rtol=1e-9)
    assert t[0] == -np.inf and 39 < t[5] < 40 and np.isnan(t[6])  # Phi(40) rounds to 1: the score does not
    np.testing.assert_allclose(truncated_scores(z, -np.inf, np.inf), z)
    assert truncated_scores(np.array([3.0]), -np.inf, 3.0)[0] == np.inf
    u = np.array([1e-6, 0.2, 0.5, 0.97])
    for lo, hi in ((-1.5, np.inf), (-np.inf, 0.3), (0.5, 2.0), (6.0, np.inf)):
        q = truncated_quantile(u, lo, hi)
        assert ((q > lo) & (q < hi)).all()
        np.testing.assert_allclose(special.ndtr(truncated_scores(q, lo, hi)), u, rtol=1e-6)


def test_values_are_clipped_at_bounds_and_values_at_bounds_spread_beyond_them_in_training():
    floor, ceiling = np.array([0.0, np.nan]), np.array([np.nan, 10.0])
    v = np.array([[-1.0, 12.0], [0.5, 5.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(clip_to_bounds(v, floor, ceiling), [[0.0, 10.0], [0.5, 5.0], [np.nan, np.nan]])
    at_floor, at_ceiling = at_bounds(v, floor, ceiling)
    assert at_floor.tolist() == [[True, False], [False, False], [False, False]]
    assert at_ceiling.tolist() == [[False, True], [False, False], [False, False]]
    x = np.array([[1.2, -0.3], [0.4, 0.1], [np.nan, np.nan]])
    spread = spread_beyond_bounds(x, at_floor, at_ceiling, seed=0)
    assert spread[0, 0] < 1.2 and spread[0, 1] > -0.3
    np.testing.assert_array_equal(spread[1:], x[1:])
    no_bounds = np.zeros_like(at_floor)
    assert spread_beyond_bounds(x, no_bounds, no_bounds, seed=0) is x


def test_a_value_at_the_floor_ties_with_every_sample_in_the_floors_share():
    """Samples -3..-1 lie in the floor's share; the value (at the floor's latent, -1) ties with all of them, so its
    centile is uniform on [0, 4/11) instead of [2/11, 4/11)."""
    samples = torch.tensor([[[-3.0, -2.0, -1.0, -1.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]]], dtype=torch.float64)
    y = torch.tensor([[-1.0]], dtype=torch.float64)
    v = torch.tensor([[0.0]], dtype=torch.float64)
    plain, _ = randomised_pit(samples, y, v)
    censored, _ = randomised_pit(samples, y, v, at_floor=torch.tensor([[True]]))
    assert float(plain) == pytest.approx(2 / 11) and float(censored) == 0.0
    top, _ = randomised_pit(samples, y, torch.tensor([[1.0]], dtype=torch.float64), at_floor=torch.tensor([[True]]))
    assert float(top) == pytest.approx(5 / 11)
    at_top, _ = randomised_pit(samples, torch.tensor([[3.0]], dtype=torch.float64), v,
                               at_ceiling=torch.tensor([[True]]))
    assert float(at_top) == pytest.approx(9 / 11)


def test_a_model_draws_its_floor_as_often_as_the_data_and_never_below_it(tmp_path, censored_cohort):
    """Without point masses the draws spread around 0 (44% of them negative for the mostly-absent measure, none at
    exactly 0); now the share at 0 follows the training data's and nothing lies below."""
    torch.set_num_threads(1)
    train = censored_cohort(800, 0)
    model = make_model("film-mlp", seed=0, epochs=30)
    model.fit(train, "age", ["sex"], ["absent", "often_zero", "normal"])
    covs = censored_cohort(60, 1)[["age", "sex"]]
    masses = {(idp, kind): share for idp, kind, value, share in model.point_masses_ if value == 0}
    assert set(masses) == {("absent", "floor"), ("often_zero", "floor")}
    assert masses["absent", "floor"] == pytest.approx((train.absent == 0).mean())
    draws = model.sample(covs, n=100, seed=0)
    for name in ("absent", "often_zero"):
        assert (draws[name] >= 0).all()
        assert (draws[name] == 0).mean() == pytest.approx((train[name] == 0).mean(), abs=0.1)
    assert (draws["normal"] > 0).all() and draws["normal"].nunique() == len(draws)
    curves = model.predict_quantiles(covs, (0.05, 0.5))
    assert (curves[0, :, 0] == 0).all() and (curves >= 0).all()
    mean, var = model.predict_moments(covs, n_samples=400, seed=0)
    assert (mean[:, 0] > 0).all() and (mean[:, 0] < 2.5).all() and np.isfinite(var).all()
    mixture = model.predict_mixture(covs, n_samples=400, seed=0)  # the floor's probability and the body apart
    p_zero = 0.95 - 0.15 * (covs.age.to_numpy() - 20) / 60
    assert abs(mixture.floor_share[:, 0].mean() - p_zero.mean()) < 0.03 and (mixture.ceiling_share == 0).all()
    assert 8 < np.median(mixture.body_mean[:, 0]) < 12 and (mixture.body_mean[:, 0] > 4).all()
    np.testing.assert_array_equal(mixture.floor_share[:, 2], 0)  # the continuous IDP: all body

    test = censored_cohort(300, 2)
    scores = model.score(test, n_samples=300, seed=0)
    zero = test.absent.to_numpy() == 0
    centile = scores["centile:absent"].to_numpy()
    assert centile[zero].max() < 0.98  # a 0 shared by 80-95% is never read as high
    assert np.isfinite(scores.filter(like="z:").to_numpy()).all()

    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.floor_, model.floor_)
    pd.testing.assert_frame_equal(again.score(test, n_samples=300, seed=0), scores)


def test_a_measure_that_stays_at_its_floor_between_visits_shows_no_change(censored_cohort):
    """Two visits at 0 draw two random centiles within the floor's share; their difference is no change (before,
    such pairs were read as significant change about as often as chance)."""
    torch.set_num_threads(1)
    model = make_model("film-mlp", seed=0, epochs=30).fit(censored_cohort(800, 0), "age", ["sex"],
                                                          ["absent", "often_zero", "normal"])
    first = censored_cohort(120, 3)
    second = first.assign(age=first.age + 1.0, normal=first.normal + 0.05)
    table = pd.concat([first.assign(sub=range(120), visit=1), second.assign(sub=range(120), visit=2)])
    result = change_scores(model, table, "sub", "visit", rho=0.5, n_samples=300)
    stayed = (first.absent == 0).to_numpy()
    assert stayed.sum() > 80
    assert (result.table["dz:absent"].to_numpy()[stayed] == 0).all()
    assert (result.table["dz:normal"] != 0).all()  # other measures' change as before


def _fit_with_a_rare_measure(backbone: str, present):
    """A model of 900 training rows: ``rare`` is 0 but at the rows and values ``present(rng)`` gives, beside a
    continuous measure that follows age."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    rare = np.zeros(900)
    rows, values = present(rng)
    rare[rows] = values
    age = rng.uniform(20, 80, 900)
    train = pd.DataFrame({"age": age, "sex": rng.integers(0, 2, 900), "rare": rare,
                          "normal": 3 + 0.01 * age + 0.3 * rng.normal(size=900)})
    options = {"epochs": 30} if backbone == "film-mlp" else {}
    return make_model(backbone, seed=0, **options).fit(train, "age", ["sex"], ["rare", "normal"])


@pytest.mark.parametrize("backbone", ["shash-baseline", "film-mlp"])
def test_a_measure_present_in_three_of_900_is_read_against_its_floor(backbone):
    """3 of 900 training rows present (3-6), the rest 0: a floor with a body of 3 values. A present value reads
    z 2-5 (the floor holds 99.7%); continuous, as with 5 values needed between the bounds, z 7-134."""
    model = _fit_with_a_rare_measure(backbone, lambda rng: (rng.choice(900, 3, replace=False), rng.uniform(3, 6, 3)))
    assert [(idp, kind) for idp, kind, _, _ in model.point_masses_] == [("rare", "floor")]
    test = pd.DataFrame({"age": [30.0, 50.0, 70.0], "sex": [0, 1, 0], "rare": [0.0, 4.0, 5.5],
                         "normal": [3.3, 3.5, 3.7]})
    z = model.score(test, seed=0)["z:rare"].to_numpy()
    assert abs(z[0]) < 3 and (z[1:] > 2).all() and (z[1:] < 5).all()
    assert (model.sample(test, n=200, seed=0).rare >= 0).all()
    assert not [w for w in model.fit_warnings_ if w.startswith("rare:")]


@pytest.mark.parametrize("backbone", ["shash-baseline", "film-mlp"])
def test_a_measure_with_one_value_off_its_floor_is_read_against_its_floor(backbone):
    """One value of 900 off 0: a floor whose body's spread is assumed (its distance to the floor) and named in the
    fit's warnings. A present value reads beyond the floor's 99.9% (z 2.9-4), further out the further it lies; a 0
    within it; no draw below 0. Continuous, as before, a present value read z 12-350."""
    model = _fit_with_a_rare_measure(backbone, lambda rng: (7, 4.5))
    assert [(idp, kind) for idp, kind, _, _ in model.point_masses_] == [("rare", "floor")]
    assert [w for w in model.fit_warnings_ if w.startswith("rare: 99.9% of the training values are 0 and the only")]
    test = pd.DataFrame({"age": [50.0] * 4, "sex": [1] * 4, "rare": [0.0, 4.5, 9.0, 45.0], "normal": [3.5] * 4})
    z = model.score(test, seed=0)["z:rare"].to_numpy()
    assert abs(z[0]) < 3.1 and (z[1:3] > 2.9).all() and (z[1:3] < 4).all() and z[2] > z[1] and z[3] > 6
    assert (model.sample(test, n=300, seed=0).rare >= 0).all()


def test_values_at_a_point_mass_most_of_the_reference_shares_are_marked():
    masses = [("a", "floor", 0.0, 0.9), ("b", "floor", 0.0, 0.3), ("b", "ceiling", 10.0, 0.6), ("gone", "floor", 0, 1)]
    values = np.array([[0.0, 0.0, 0.0], [1.0, 10.0, np.nan], [np.nan, 5.0, 0.0]])
    mask = at_shared_masses(values, ["a", "b", "c"], masses)
    np.testing.assert_array_equal(mask, [[True, False, False], [False, True, False], [False, False, False]])


def test_values_beyond_a_bound_are_scored_as_it_and_named_in_a_note(censored_cohort):
    """-1 below a floor of 0 (a code for "not measured", say) is scored as the floor, and the scores say so."""
    model = make_model("shash-baseline").fit(censored_cohort(800, 0), "age", ["sex"], ["absent", "normal"])
    test = censored_cohort(3, 1).assign(absent=[-1.0, 0.0, -1.0])
    scores = model.score(test, seed=0)
    assert np.isfinite(scores["z:absent"]).all() and (scores["centile:absent"] < 0.96).all()
    assert [n for n in scores.attrs["notes"] if n.startswith("IDP 'absent': 2 value(s) below its floor 0")]
    assert not beyond_bounds_notes(["a"], np.array([[0.0], [np.nan]]), np.array([0.0]), np.array([np.nan]))
    above = beyond_bounds_notes(["a"], np.array([[7.0], [5.0]]), np.array([np.nan]), np.array([5.0]))
    assert len(above) == 1 and "1 value(s) above its ceiling 5" in above[0]


@pytest.mark.parametrize("backbone", ["shash-baseline", "film-mlp"])
def test_a_measure_of_three_values_is_a_floor_a_ceiling_and_a_body_of_one_value(backbone, tmp_path):
    """0, 1 or 2 (a rating): a floor, a ceiling and 224 equal values between, which gave the location-scale stage
    a column without spread (NaN z, a card with -inf that would not load, a ZeroDivisionError). The body now takes
    the assumed spread; a 1 reads between the two bounds' shares, and the model saves and loads."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"age": rng.uniform(20, 80, 600), "sex": rng.integers(0, 2, 600),
                          "rating": rng.choice([0.0, 1.0, 2.0], 600, p=[0.4, 0.4, 0.2]),
                          "normal": rng.normal(size=600)})
    options = {"epochs": 10} if backbone == "film-mlp" else {}
    model = make_model(backbone, seed=0, **options).fit(table, "age", ["sex"], ["rating", "normal"])
    assert [kind for idp, kind, _, _ in model.point_masses_ if idp == "rating"] == ["floor", "ceiling"]
    assert [w for w in model.fit_warnings_ if w.startswith("rating:") and "224 other values are all 1" in w]
    scores = load_model(model.save(tmp_path / "m")).score(table.head(40), seed=0)
    centile = scores["centile:rating"].to_numpy()
    assert np.isfinite(scores["z:rating"]).all()
    middle = (table.rating.head(40) == 1).to_numpy()
    assert (centile[middle] > 0.3).all() and (centile[middle] < 0.9).all()
