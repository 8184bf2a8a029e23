import copy

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import special, stats

from normcore._utils.errors import InputError
from normcore.tabular.covariates import MARGINALISE
from normcore.tabular.scoring import (
    FAR_OFF_MIN_SUBJECTS,
    _chi2_logsf_asymptotic,
    chi2_z,
    copula_correlation,
    far_off_notes,
    mahalanobis,
    mix_scores,
    normal_scores,
    randomised_pit,
)


def test_randomised_pit_counts_ranks_and_ties():
    samples = torch.tensor([[[1.0, 2.0, 2.0, 3.0]]], dtype=torch.float64)  # (n=1, D=1, M=4)
    v = torch.tensor([[0.5]], dtype=torch.float64)
    u, beyond = randomised_pit(samples, torch.tensor([[2.5]], dtype=torch.float64), v)
    assert float(u) == (3 + 0.5) / 5 and not bool(beyond)
    u, _ = randomised_pit(samples, torch.tensor([[2.0]], dtype=torch.float64), v)
    assert float(u) == (1 + 0.5 * 3) / 5  # one below, two ties


def test_observations_beyond_all_samples_are_clipped():
    samples = torch.arange(1.0, 1001.0, dtype=torch.float64).view(1, 1, 1000)
    v = torch.tensor([[0.9]], dtype=torch.float64)
    lo, b_lo = randomised_pit(samples, torch.tensor([[-5.0]], dtype=torch.float64), v)
    hi, b_hi = randomised_pit(samples, torch.tensor([[5000.0]], dtype=torch.float64), v)
    assert float(lo) == 0.5 / 1001 and float(hi) == 1 - 0.5 / 1001
    assert bool(b_lo) and bool(b_hi)
    assert abs(special.ndtri(float(hi)) - 3.29) < 0.01


def test_pit_of_draws_from_the_same_distribution_is_uniform():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(3000, 1, 200, generator=g, dtype=torch.float64).sort(-1).values
    y = torch.randn(3000, 1, generator=g, dtype=torch.float64)
    u, _ = randomised_pit(samples, y, torch.rand(3000, 1, generator=g, dtype=torch.float64))
    assert stats.kstest(u.numpy().ravel(), "uniform").pvalue > 0.01


def test_copula_correlation_recovers_a_known_correlation():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 5000, 2, generator=g)
    z[..., 1] = 0.8 * z[..., 0] + 0.6 * z[..., 1]
    samples = torch.exp(z)  # monotone margins do not change the copula
    r = copula_correlation(samples)
    assert abs(float(r[0, 0, 1]) - 0.8) < 0.03 and float(r[0, 0, 0]) == 1.0


def test_normal_scores_are_the_normal_quantiles_of_the_within_slice_ranks():
    samples = torch.randn(3, 50, 4, generator=torch.Generator().manual_seed(2))
    ranks = samples.numpy().argsort(axis=1).argsort(axis=1)
    np.testing.assert_allclose(normal_scores(samples).numpy(), stats.norm.ppf((ranks + 0.5) / 50), rtol=0, atol=1e-12)


def test_mahalanobis_matches_hand_computation_and_handles_missing():
    corr = np.array([[[1.0, 0.5], [0.5, 1.0]]] * 2)
    z = np.array([[1.0, 2.0], [np.nan, 2.0]])
    d2, mz = mahalanobis(z, corr)
    expected = np.array([1.0, 2.0]) @ np.linalg.inv(corr[0]) @ np.array([1.0, 2.0])
    assert d2[0] == expected and d2[1] == 4.0
    assert mz[0] == pytest.approx(special.ndtri(stats.chi2.cdf(expected, 2)), rel=1e-12)
    assert mz[1] == pytest.approx(special.ndtri(stats.chi2.cdf(4.0, 1)), rel=1e-12)
    np.testing.assert_allclose(mahalanobis(z, corr[0]), (d2, mz))  # one correlation shared by every row


def test_multivariate_z_stays_finite_and_increasing_for_any_distance():
    """Far beyond where chi-square's distribution function rounds to 1 (z 8.2) and where its log tail underflows
    (d2 about 1400 at 10 degrees of freedom), larger distances keep larger, finite z; near it they match the exact
    tail, and where both exist the far tail's series is the exact tail."""
    d2 = np.array([50.0, 200.0, 1e3, 1.3e3, 1.6e3, 1e4, 1e8])
    z = chi2_z(d2, np.full(len(d2), 10.0))
    assert np.isfinite(z).all() and (np.diff(z) > 0).all()
    np.testing.assert_allclose(z[:4], -special.ndtri_exp(stats.chi2.logsf(d2[:4], 10)), rtol=1e-10)
    np.testing.assert_allclose(_chi2_logsf_asymptotic(d2[2:4], np.array([10.0, 10.0])),
                               stats.chi2.logsf(d2[2:4], 10), rtol=1e-9)


def test_tails_scored_in_blocks_of_values_give_identical_scores(tiny_model, cohort, monkeypatch):
    """The tail model takes a chunk's rows in blocks of TAIL_BLOCK_VALUES values (memory bounded however many values
    lie beyond the anchors, e.g. a cohort scored against the wrong reference); the blocks change no score, on
    either tail scale."""
    import normcore.tabular.diffusion_model as dm

    df = cohort[0].head(80).copy()
    idps = tiny_model.idps
    df[idps] = df[idps] * 1.6 - 0.3 * df[idps].mean()  # many values beyond the samples on both sides
    for scale in ("gaussianised", "residual"):
        monkeypatch.setattr(tiny_model, "tail_scale", scale)
        monkeypatch.setattr(dm, "TAIL_BLOCK_VALUES", 1 << 20)
        whole = tiny_model.score(df, n_samples=100, seed=4)
        monkeypatch.setattr(dm, "TAIL_BLOCK_VALUES", 3 * len(idps) + 1)  # three rows per block
        blocks = tiny_model.score(df, n_samples=100, seed=4)
        assert whole["n_beyond_samples"].sum() > len(df)
        pd.testing.assert_frame_equal(whole, blocks)


def test_scoring_in_memory_bounded_chunks_gives_the_same_kind_of_scores(tiny_model, cohort, monkeypatch):
    """Distinct covariate points are sampled in chunks bounded in bytes; the scores agree with unchunked ones
    up to Monte Carlo noise (other random draws), and the correlation budget falls back to a pooled
    correlation (then to none), each said in a note."""
    import normcore.tabular.diffusion_model as dm

    df = cohort[0].head(60)
    whole = tiny_model.score(df, n_samples=100, seed=4)
    assert whole.attrs["notes"] == []
    d = len(tiny_model.idps)
    monkeypatch.setattr(dm, "SCORE_SAMPLE_BYTES", 7 * 100 * d * 8)  # 7 covariate points per chunk
    chunked = tiny_model.score(df, n_samples=100, seed=4)
    z = chunked.filter(like="z:").to_numpy()
    assert np.isfinite(z).all() and np.isfinite(chunked["multivariate_d2"]).all()
    z_whole = whole.filter(like="z:").to_numpy()
    assert np.corrcoef(z.ravel(), z_whole.ravel())[0, 1] > 0.95 and np.abs(z - z_whole).mean() < 0.3
    monkeypatch.setattr(dm, "CORRELATION_BYTES", 1)
    pooled = tiny_model.score(df, n_samples=100, seed=4)
    assert "pooled" in pooled.attrs["notes"][0] and np.isfinite(pooled["multivariate_d2"]).all()
    monkeypatch.setattr(dm, "MAX_MULTIVARIATE_IDPS", d - 1)
    none = tiny_model.score(df, n_samples=100, seed=4)
    assert "no multivariate score" in none.attrs["notes"][0] and none["multivariate_d2"].isna().all()
    np.testing.assert_allclose(none.filter(like="z:").to_numpy(), z)


def test_one_shared_correlation_gives_the_per_row_result_without_copies():
    from normcore.tabular.scoring import multivariate_scores

    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    cov = a @ a.T + 5 * np.eye(5)
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    z = rng.standard_normal((40, 5))
    z[3, 1] = z[7, 1] = z[9, 4] = np.nan  # two patterns of missing IDPs
    keep = np.array([True, True, True, False, True])
    shared = multivariate_scores(z, corr, keep)
    per_row = multivariate_scores(z, np.broadcast_to(corr, (40, 5, 5)), keep)
    np.testing.assert_allclose(shared, per_row)
    assert np.isfinite(shared[0]).all()


def test_per_point_correlations_give_the_per_row_result():
    """Rows grouped by their covariate point (each point's matrix factorised once) score as if each row
    carried its own copy of its point's correlation, missing IDPs included."""
    from normcore.tabular.scoring import PointCorrelations, multivariate_scores

    rng = np.random.default_rng(1)
    corrs = []
    for _ in range(3):
        a = rng.standard_normal((6, 6))
        cov = a @ a.T + 3 * np.eye(6)
        corrs.append(cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))))
    per_point = np.stack(corrs)
    inverse = rng.integers(0, 3, 50)
    inverse[inverse == 1] = 2  # a point no row uses
    z = rng.standard_normal((50, 6))
    z[[2, 5, 11], 0] = np.nan
    z[[5, 20], 3] = np.nan
    keep = np.array([True, True, False, True, True, True])
    grouped = multivariate_scores(z, PointCorrelations(per_point, inverse), keep)
    per_row = multivariate_scores(z, per_point[inverse], keep)
    np.testing.assert_allclose(grouped, per_row, rtol=1e-10)
    assert np.isfinite(grouped[0]).all() and len(np.unique(inverse)) == 2


def test_tail_z_is_exact_for_a_normal_conditional_far_beyond_the_samples():
    """On the Gaussianised scale a normal conditional's tail is extrapolated exactly: values at true |z| 3-6
    (the samples end near 3.3) are scored within the Monte Carlo error of the fitted scale."""
    from normcore.tabular.scoring import tail_ranks, tail_z

    rng = np.random.default_rng(0)
    m, mu, sd = 1000, 2.0, 0.5
    true = np.repeat(np.linspace(3, 6, 13), 40)
    errors = {True: [], False: []}
    for upper in (True, False):
        sign = 1 if upper else -1
        latent = np.sort(mu + sd * rng.standard_normal((true.size, m)), axis=1)
        k, lo_idx, hi_idx = tail_ranks(m)
        ranks = hi_idx if upper else lo_idx
        z = tail_z(latent[:, ranks], ranks, m, mu + sign * sd * true, upper)
        errors[upper] = sign * z - true
    for upper, err in errors.items():
        assert np.median(np.abs(err)) < 0.15 and abs(np.mean(err)) < 0.1, upper
        assert np.quantile(np.abs(err), 0.95) < 0.5
    assert k == 10 and len(lo_idx) <= 16 and lo_idx[0] == k - 1 and hi_idx[-1] == m - k


def test_tail_z_is_continuous_with_the_ranks_at_its_anchor_and_monotone():
    from normcore.tabular.scoring import tail_ranks, tail_z

    m = 1000
    latent = np.sort(np.random.default_rng(1).standard_normal((1, m)), axis=1)
    k, _, hi_idx = tail_ranks(m)
    anchor = latent[0, m - k]
    x = anchor + np.array([0.0, 0.1, 0.5, 1.0, 3.0])
    z = tail_z(np.repeat(latent[:, hi_idx], len(x), axis=0), hi_idx, m, x, upper=True)
    assert z[0] == pytest.approx(special.ndtri((m - k + 1) / (m + 1)))  # the rank's own z at the anchor
    assert np.all(np.diff(z) > 0)
    flat = np.zeros((1, len(hi_idx)))  # degenerate samples: no slope, the anchor's z
    assert tail_z(flat, hi_idx, m, np.array([5.0]), upper=True)[0] == pytest.approx(z[0])


def test_the_diffusion_model_scores_far_values_beyond_the_sample_cap(tiny_model, cohort, monkeypatch):
    """Values far beyond all samples get a finite z that grows with the distance (not the 3.29-style cap), are
    still counted in n_beyond_samples, and values inside the samples keep their rank-based z."""
    import normcore.tabular.scoring as scoring

    df, truth = cohort
    rows = df[df.group == "control"].head(3).reset_index(drop=True)
    far = pd.concat([rows] * 3, ignore_index=True)
    idp = truth.idp_names[0]
    base = rows[idp].to_numpy()
    spread = float(df[idp].std())
    far[idp] = np.concatenate([base + 6 * spread, base + 9 * spread, base - 9 * spread])
    scores = tiny_model.score(far, seed=0)
    z = scores[f"z:{idp}"].to_numpy()
    cap = special.ndtri(1 - 0.5 / (tiny_model.n_samples + 1))
    assert np.all(np.isfinite(z)) and np.all(z[:6] > cap) and np.all(z[6:] < -cap)
    assert np.all(z[3:6] > z[:3])  # further out, more extreme
    assert (scores.n_beyond_samples >= 1).all()
    inside = tiny_model.score(rows, seed=0)
    monkeypatch.setattr(scoring, "TAIL_SHARE", 0.0)
    ranks_only = tiny_model.score(rows, seed=0)
    z_in = inside[[f"z:{c}" for c in truth.idp_names]].to_numpy()
    z_rank = ranks_only[[f"z:{c}" for c in truth.idp_names]].to_numpy()
    body = np.abs(z_rank) < 2.0  # inside the 1% anchors
    np.testing.assert_allclose(z_in[body], z_rank[body])
    assert np.all(np.abs(tiny_model.score(far, seed=0)[f"z:{idp}"]) <= cap + 1e-9)  # off: the old cap


def test_latent_scale_scoring_equals_scoring_in_idp_units(tiny_model, cohort, monkeypatch):
    """Rows of named levels are compared with samples on the Gaussianised scale: the map is increasing per IDP,
    so their centiles equal the comparison in IDP units. Beyond the tail anchors both paths fit the normal tail on
    the scale ``tail_scale`` names, so the extrapolated z agree too."""
    df, truth = cohort
    df = df.copy()
    idp = truth.idp_names[0]
    spread = float(df[idp].std())
    df.loc[df.index[:20], idp] += np.where(np.arange(20) % 2, 5.0, -5.0) * spread  # far beyond the samples
    model = copy.deepcopy(tiny_model).set_params(score_age_resolution=0)  # the same points either way
    latent = model.score(df, n_samples=200, seed=3)
    points = model._score_points
    monkeypatch.setattr(model, "_score_points", lambda a, c: (*points(a, c)[:4], 0))  # no latent points
    in_units = model.score(df, n_samples=200, seed=3)
    cols = [c for c in latent.columns if c.startswith("centile:")]
    inside = (latent[cols] > 0.011) & (latent[cols] < 0.989)  # the randomised PIT's range, not the tail model's
    assert inside.to_numpy().mean() > 0.9 and (latent[cols].to_numpy() < 0.005).sum() >= 10
    np.testing.assert_allclose(latent[cols].to_numpy()[inside.to_numpy()], in_units[cols].to_numpy()[inside.to_numpy()],
                               rtol=0, atol=1e-9)
    z_cols = [f"z:{c}" for c in truth.idp_names]
    np.testing.assert_allclose(latent[z_cols].to_numpy(), in_units[z_cols].to_numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", ["gaussianised", "residual"])
def test_the_tail_is_fitted_on_the_scale_tail_scale_names(tiny_model, cohort, monkeypatch, scale):
    """The ``tail_scale`` parameter names where the normal tail is extrapolated: the Gaussianised scale the model
    samples on (default, fitted from the median), or the location-scale residual (affine in IDP units at a point,
    fitted from the outer quarter); the two differ out there."""
    import normcore.tabular.diffusion_model as dm

    df, truth = cohort
    rows = df[df.group == "control"].head(4).reset_index(drop=True)
    idp = truth.idp_names[0]
    rows[idp] = rows[idp] + np.array([6.0, -6.0, 8.0, -8.0]) * float(df[idp].std())
    seen, fitted_ranks = [], []
    real = dm.tail_z

    def spy(order, ranks, m, x, upper):
        seen.append(x)
        fitted_ranks.append(np.asarray(ranks))
        return real(order, ranks, m, x, upper)

    monkeypatch.setattr(dm, "tail_z", spy)
    model = copy.deepcopy(tiny_model).set_params(tail_scale=scale)
    model.score(rows, n_samples=200, seed=0)
    x = np.unique(np.concatenate(seen))  # a row between two grid ages is fitted at both
    residual = model.location_scale_.transform(rows[truth.idp_names].to_numpy(float), model.encoder_.ages(rows),
                                               model.encoder_.codes(rows))
    gaussianised = model.transformer_.transform(residual)[:, 0]
    expected, other = (residual[:, 0], gaussianised) if scale == "residual" else (gaussianised, residual[:, 0])
    np.testing.assert_allclose(x, np.sort(expected), rtol=1e-9)
    assert np.abs(np.sort(other) - x).max() > 0.1
    inner = {"gaussianised": 99, "residual": 49}[scale]  # 0-based rank of the lower fit's innermost sample, of 200
    assert all(r.max() == inner or r.min() == 199 - inner for r in fitted_ranks)
    with pytest.raises(InputError, match="tail_scale"):
        copy.deepcopy(tiny_model).set_params(tail_scale="idp units").score(rows, seed=0)


def test_score_points_interpolate_between_grid_ages(tiny_model):
    """Rows of named levels share samples drawn on a grid of ages, at their nearest grid age; a row whose other
    neighbouring grid age is also a point is scored against both, weighted linearly in its age. Marginalised rows
    keep their own age."""
    model = copy.deepcopy(tiny_model).set_params(score_age_resolution=1.0)
    age = np.array([30.25, 30.75, 31.0, 30.25, 30.2])
    codes = np.array([[0, 1], [0, 1], [0, 1], [1, 1], [MARGINALISE, 1]])
    u_age, u_codes, pair, weight, n_latent = model._score_points(age, codes)
    assert u_age[pair[0]].tolist() == [30.0, 31.0] and u_age[pair[1]].tolist() == [31.0, 30.0]
    np.testing.assert_allclose(weight[:2], [[0.75, 0.25], [0.75, 0.25]])  # the nearest first
    assert pair[2].tolist() == [pair[1, 0]] * 2 and weight[2].tolist() == [1.0, 0.0]  # on the grid: one point
    assert u_codes[pair[3, 0]].tolist() == [1, 1] and pair[3, 0] == pair[3, 1]  # no neighbour at 31 for its level
    assert weight[3].tolist() == [1.0, 0.0] and u_age[pair[3, 0]] == 30.0
    assert n_latent == 3 and pair[4].tolist() == [3, 3] and u_age[3] == 30.2  # marginalised: exact age, last
    assert len(u_age) == 4  # interpolation adds no points


def test_grid_ages_of_in_range_subjects_stay_in_the_training_range(tiny_model):
    """A grid age may fall outside the training ages (wide grids, or an edge); an in-range subject is then
    compared with samples at the range's end, never extrapolated ones. Out-of-range subjects keep the grid."""
    lo, hi = tiny_model.age_range_
    step = 1.5 * hi  # grid ages 0 and 1.5 hi around the whole training range
    model = copy.deepcopy(tiny_model).set_params(score_age_resolution=step)
    age = np.array([lo, lo + 0.4 * (hi - lo), hi, lo - 30.0])
    u_age, _, pair, weight, _ = model._score_points(age, np.zeros((4, 2), dtype=np.int64))
    assert sorted(u_age.tolist()) == [0.0, lo, hi]  # 0 and 1.5 hi clipped to the range's ends when inside it
    assert u_age[pair[1]].tolist() == [lo, hi] and np.isclose(weight[1, 1], 0.4)
    assert u_age[pair[0, 0]] == lo and weight[0].tolist() == [1.0, 0.0]
    assert u_age[pair[2, 0]] == hi and weight[2].tolist() == [1.0, 0.0]
    assert u_age[pair[3, 0]] == 0.0 and weight[3].tolist() == [1.0, 0.0]  # outside the range: the grid as it is


def test_mix_scores_is_the_mixture_distribution_even_far_out():
    z_a, z_b = np.array([-1.0, 0.5, 9.0, -12.0, 2.0]), np.array([0.0, 0.5, 9.0, -12.0, 30.0])
    w = np.array([0.3, 0.5, 0.2, 0.9, 0.5])
    centile, z = mix_scores(special.ndtr(z_a), z_a, special.ndtr(z_b), z_b, w)
    expected = special.ndtri((1 - w[:2]) * special.ndtr(z_a[:2]) + w[:2] * special.ndtr(z_b[:2]))
    np.testing.assert_allclose(z[:2], expected, rtol=1e-12)
    np.testing.assert_allclose(z[2:4], [9.0, -12.0], rtol=1e-9)  # equal scores stay, where 1 - u rounds to 0
    assert z[4] == pytest.approx(-special.ndtri(0.5 * special.ndtr(-2.0)))  # the far one adds nothing above
    np.testing.assert_allclose(centile, (1 - w) * special.ndtr(z_a) + w * special.ndtr(z_b))


def test_mix_scores_stay_finite_where_the_normal_tail_underflows():
    """Scores beyond |z| 38 (Phi underflows to 0 in float64; a heavy-tailed IDP's extreme value gets them) mix to a
    finite z between the two, as the tails' logarithms do."""
    z_a, z_b = np.array([-45.0, 45.0, -40.0, 60.0]), np.array([-45.0, 45.0, -50.0, 50.0])
    w = np.array([0.5, 0.3, 0.5, 0.0])
    _, z = mix_scores(special.ndtr(z_a), z_a, special.ndtr(z_b), z_b, w)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z[:2], [-45.0, 45.0], rtol=1e-9)
    assert -40.0 > z[2] > -40.1  # the nearer score's tail dominates the mixture's
    assert z[3] == pytest.approx(60.0)  # weight 0: the other score adds nothing


def test_a_row_between_grid_ages_is_scored_as_the_mixture_of_both(tiny_model, cohort, monkeypatch):
    """With the same samples (the same grid points and seed), a row's interpolated scores are the mixture of its
    scores against each of its two points alone, extreme values included, and finite for values so far out that
    Phi underflows (they were -inf/+inf)."""
    df, truth = cohort
    rows = df[df.group == "control"].head(40).reset_index(drop=True)
    model = copy.deepcopy(tiny_model).set_params(score_age_resolution=25.0)
    u_age, u_codes, pair, weight, n_latent = model._score_points(*model._covariates_of(rows, "rows"))
    mixed = np.flatnonzero(weight[:, 1] > 0.05)[:6]
    assert len(mixed) == 6
    idp = truth.idp_names[0]
    rows.loc[mixed, idp] += np.array([5.0, -5.0, 8.0, -8.0, 500.0, -500.0]) * float(df[idp].std())  # interpolated
    both = model.score(rows, n_samples=200, seed=5)
    alone = []
    for k in (0, 1):
        one = np.column_stack([np.ones(len(rows)), np.zeros(len(rows))])
        monkeypatch.setattr(model, "_score_points", lambda a, c, k=k, one=one: (u_age, u_codes, pair[:, [k, k]],
                                                                               one, n_latent))
        alone.append(model.score(rows, n_samples=200, seed=5))
    z_cols = [f"z:{c}" for c in truth.idp_names]
    u_cols = [f"centile:{c}" for c in truth.idp_names]
    centile, z = mix_scores(alone[0][u_cols].to_numpy(), alone[0][z_cols].to_numpy(), alone[1][u_cols].to_numpy(),
                            alone[1][z_cols].to_numpy(), weight[:, 1:])
    np.testing.assert_allclose(both[z_cols].to_numpy(), z, rtol=0, atol=1e-9)
    np.testing.assert_allclose(both[u_cols].to_numpy(), centile, rtol=0, atol=1e-12)
    assert (np.abs(both[f"z:{idp}"].to_numpy()[mixed]) > 3.3).all()  # the extremes went through the tail model
    assert np.isfinite(both[z_cols].to_numpy()).all() and (np.abs(both[f"z:{idp}"].to_numpy()[mixed[4:]]) > 38).all()


def test_shipped_demo_model_scores_extremes_near_their_exact_z():
    """End to end on the shipped demo FiLM-MLP and its generator: 20 controls' covariates x 10 IDPs with values at
    true |z| 3-6 (either side). With the default M = 1000 the samples alone would cap |z| near 3.3 (median error
    about 1.3); the tail model scores them within 0.32 of their exact z at the median (0.24-0.27 over three
    draws; ``benchmarks/tails.py`` measures it on 1000 values)."""
    from pathlib import Path

    from normcore.registry import load_model
    from normcore.tabular.synthetic import SyntheticTruth

    models = Path(__file__).resolve().parents[2] / "models"
    model = load_model(models / "demo-film-mlp")
    truth = SyntheticTruth.load(models / "demo-cohort.truth.json")
    rows = truth.sample(20, seed=0)
    rng = np.random.default_rng(0)
    wanted = rng.choice([-1.0, 1.0], size=(20, 10)) * rng.uniform(3, 6, size=(20, 10))
    age, sex = rows.age.to_numpy(), rows.sex.to_numpy()
    for j, name in enumerate(truth.idp_names):
        rows[name] = truth.quantile(special.ndtr(wanted[:, j]), age, sex, name)
    true = np.column_stack([truth.true_z(rows[c].to_numpy(), age, sex, c) for c in truth.idp_names])
    scores = model.score(rows, seed=0)
    z = scores[[f"z:{c}" for c in truth.idp_names]].to_numpy(float)
    assert np.median(np.abs(z - true)) < 0.32
    assert np.all(np.sign(z) == np.sign(true)) and np.abs(z).min() > 1.96  # every one flagged, on its side
    assert scores.n_beyond_samples.sum() > 100  # most of them lie beyond all 1000 samples


def test_a_cohort_far_off_the_reference_on_one_idp_gets_a_note_naming_it():
    rng = np.random.default_rng(0)
    n = FAR_OFF_MIN_SUBJECTS
    z = np.column_stack([rng.normal(-12, 2, n), rng.normal(0, 1, n), rng.normal(6, 3, n)])
    y = np.column_stack([np.full(n, 3.0), np.full(n, 20.0), np.full(n, 5.0)])
    z[0, 2] = np.nan  # nine values left: too few to say a cohort is off
    notes = far_off_notes(["vol", "thick", "lesions"], z, y, {"vol": 3000.0, "thick": 20.0})
    assert len(notes) == 1 and "'vol'" in notes[0] and "0.001 times the training mean" in notes[0]
    assert far_off_notes(["vol"], z[:, :1], y[:, :1], {})[0].count("times") == 0  # no training mean: no ratio


def test_idps_far_off_by_one_power_of_ten_get_one_note_naming_the_units():
    """Volumes in cm^3 scored against a reference in mm^3 (fcon1000: 41 IDPs far off, 41 notes before): one note."""
    rng = np.random.default_rng(1)
    n = FAR_OFF_MIN_SUBJECTS + 5
    z = np.column_stack([rng.normal(-12, 1, n), rng.normal(-9, 1, n), rng.normal(-8, 1, n), rng.normal(7, 1, n)])
    y = np.column_stack([np.full(n, 3.1), np.full(n, 0.95), np.full(n, 12.0), np.full(n, 40.0)])
    means = {"a": 3000.0, "b": 1000.0, "c": 11.0, "d": 20.0}
    notes = far_off_notes(["a", "b", "c", "d"], z, y, means)
    assert len(notes) == 3 and notes[0].startswith("2 IDPs ('a', 'b') have values about 0.001 times the reference's")
    assert notes[1].startswith("IDP 'c'") and notes[2].startswith("IDP 'd'")  # near 1 and 2x: named one by one


def test_scoring_a_column_in_other_units_says_so(tiny_model, cohort):
    df, truth = cohort
    table = df.head(20).copy()
    first = truth.idp_names[0]
    table[first] = table[first] * 1000.0
    notes = tiny_model.score(table).attrs["notes"]
    assert [n for n in notes if n.startswith(f"IDP {first!r}")] and not [n for n in notes if truth.idp_names[1] in n]
    assert not [n for n in tiny_model.score(df.head(20)).attrs["notes"] if "median z" in n]
