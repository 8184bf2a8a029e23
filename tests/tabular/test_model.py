import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from normcore import NormativeDiffusion
from normcore._utils.errors import InputError
from normcore._utils.progress import Cancelled, Progress
from normcore.tabular.base import NormativeModel
from tests.conftest import TINY


def test_score_returns_cli_columns_in_order(tiny_model, cohort):
    df, truth = cohort
    out = tiny_model.score(df.head(30))
    idp_cols = [c for name in truth.idp_names for c in (f"z:{name}", f"centile:{name}")]
    assert list(out.columns) == list(df.columns) + idp_cols + ["multivariate_d2", "multivariate_z",
                                                              "n_beyond_samples", "out_of_range"]
    cent = out[[c for c in out if c.startswith("centile:")]].to_numpy()
    assert np.all((cent > 0) & (cent < 1))
    assert np.all(out["multivariate_d2"] >= 0)


def test_scores_are_reproducible_and_respect_seed(tiny_model, cohort):
    df, _ = cohort
    a, b = tiny_model.score(df.head(10), seed=5), tiny_model.score(df.head(10), seed=5)
    c = tiny_model.score(df.head(10), seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_identical_covariates_share_samples(tiny_model, cohort):
    df, truth = cohort
    row = df.head(1)
    twice = pd.concat([row, row.assign(**{truth.idp_names[0]: row[truth.idp_names[0]] + 10})], ignore_index=True)
    out = tiny_model.score(twice, seed=1)
    # same covariates -> same sample set -> a much larger value cannot get a smaller centile
    assert out[f"centile:{truth.idp_names[0]}"][1] >= out[f"centile:{truth.idp_names[0]}"][0]
    assert out[f"centile:{truth.idp_names[0]}"][1] > 0.99


def test_a_batch_covariate_shares_samples_across_its_levels(tiny_model, cohort, tmp_path):
    df, truth = cohort
    controls = df[df.group == "control"]
    model = NormativeDiffusion(**TINY, batch_covariates=["site"]).fit(controls, age="age",
                                                                      covariates=["sex", "site"], idps=truth.idp_names)
    rows = controls.head(60)
    assert len(model._score_points(*model._covariates_of(rows, "t"))[0]) < \
        len(tiny_model._score_points(*tiny_model._covariates_of(rows, "t"))[0])
    # a subject carried to another site through that site's location and scale is the same deviation there
    sub = rows.head(6)
    age, codes = model._covariates_of(sub, "t")
    moved_codes = codes.copy()
    moved_codes[:, 1] = (codes[:, 1] + 1) % len(model.levels_["site"])
    moved = sub.assign(site=[model.levels_["site"][c] for c in moved_codes[:, 1]])
    moved[truth.idp_names] = model._to_values(model._to_latent(sub[truth.idp_names].to_numpy(float), age, codes),
                                              age, moved_codes)
    z = [f"z:{c}" for c in truth.idp_names]
    np.testing.assert_allclose(model.score(sub, seed=3)[z], model.score(moved, seed=3)[z], atol=1e-8)
    # not so where the network is conditioned on the site (this barely trained one moves z by ~1e-5)
    assert np.abs(tiny_model.score(sub, seed=3)[z].to_numpy() - tiny_model.score(moved, seed=3)[z].to_numpy()).max() \
        > 1e-7
    model.save(tmp_path / "b")
    again = NormativeDiffusion.load(tmp_path / "b")
    assert again.batch_covariates == ["site"] and again.encoder_.network_covariates == ["sex"]
    pd.testing.assert_frame_equal(again.score(sub, seed=3), model.score(sub, seed=3))
    with pytest.raises(InputError, match="location-scale stage"):
        NormativeDiffusion(**TINY, batch_covariates=["site"], location_scale=False).fit(
            controls, age="age", covariates=["sex", "site"], idps=truth.idp_names)
    with pytest.raises(InputError, match="batch_covariates"):
        NormativeDiffusion(batch_covariates="site").check_params()


@pytest.mark.parametrize("batch", [False, True])
def test_predict_moments_from_the_shared_grid_match_samples_at_each_rows_own_covariates(tiny_model, cohort, batch):
    """Predictive moments come from scoring's shared age grid (residual samples, each row's own location and scale,
    mixed between grid points), so their cost grows with the grid, not the rows; they agree with the moments of
    samples drawn at each row's exact covariates within Monte Carlo error, with the site a network input or a batch
    effect."""
    df, truth = cohort
    controls = df[df.group == "control"]
    model = tiny_model if not batch else NormativeDiffusion(**TINY, batch_covariates=["site"]).fit(
        controls, age="age", covariates=["sex", "site"], idps=truth.idp_names)
    rows = controls.sample(40, random_state=0)
    mean, var = model.predict_moments(rows, n_samples=4000, seed=1)
    age, codes = model._covariates_of(rows, "rows")
    exact = model._draw(age, codes, 4000, seed=2).numpy()  # at each row's own age and levels
    sd = exact.std(axis=1, ddof=1)
    assert (np.abs(mean - exact.mean(axis=1)) < 0.05 * sd).all()
    assert np.all((var / sd**2 > 0.85) & (var / sd**2 < 1.15))


@pytest.mark.parametrize("batch", [False, True])
def test_predict_quantiles_from_the_shared_grid_match_quantiles_at_each_rows_own_covariates(tiny_model, cohort,
                                                                                             batch):
    """Predictive quantiles (the PCNtoolkit export's centile table) come from scoring's shared age grid: residual
    quantiles interpolated between grid points, placed with each row's own location and scale. They agree with the
    quantiles of samples drawn at each row's exact covariates (the per-row reference) within its Monte Carlo error,
    measured here as the gap between two reference runs of different seeds."""
    df, truth = cohort
    controls = df[df.group == "control"]
    model = tiny_model if not batch else NormativeDiffusion(**TINY, batch_covariates=["site"]).fit(
        controls, age="age", covariates=["sex", "site"], idps=truth.idp_names)
    rows = controls.sample(40, random_state=0)
    q = (0.05, 0.25, 0.5, 0.75, 0.95)
    shared = model.predict_quantiles(rows, q, seed=1)
    assert shared.shape == (len(q), len(rows), len(truth.idp_names)) and (np.diff(shared, axis=0) > 0).all()
    reference, again = (NormativeModel.predict_quantiles(model, rows, q, seed=s) for s in (2, 3))
    age, codes = model._covariates_of(rows, "rows")
    sd = model._draw(age, codes, 4000, seed=4).numpy().std(axis=1)
    error, floor = np.abs(shared - reference) / sd, np.abs(again - reference) / sd
    assert np.median(error) < 1.5 * np.median(floor) and error.max() < 1.5 * floor.max()


def test_predict_quantiles_reports_progress_and_stops_when_cancelled(tiny_model, cohort):
    """The export's sampling reports each sampler call under "centiles" and stops at the next one after a cancel
    (a cohort's points may all lie in one chunk)."""
    df, _ = cohort
    heard = []
    progress = Progress(callback=lambda stage, done, total, **_: heard.append(stage) or progress.cancel())
    with pytest.raises(Cancelled):
        tiny_model.predict_quantiles(df.head(40), (0.1, 0.9), progress=progress)
    assert heard == ["centiles"]


def test_out_of_range_age_is_scored_and_flagged(tiny_model, cohort):
    df, _ = cohort
    old = df.head(2).assign(age=[130.0, 50.0])
    out = tiny_model.score(old)
    assert out["out_of_range"].tolist() == [True, False]
    assert np.isfinite(out.filter(like="z:").to_numpy()).all()


def test_unseen_site_is_an_error_unless_allowed(tiny_model, cohort):
    df, _ = cohort
    new = df.head(3).assign(site="site_99")
    with pytest.raises(InputError, match="site_99"):
        tiny_model.score(new)
    tiny_model.allow_unseen = True
    try:
        assert np.isfinite(tiny_model.score(new).filter(like="z:").to_numpy()).all()
    finally:
        tiny_model.allow_unseen = False



def test_levels_and_idp_columns_spelled_otherwise_are_named_not_taken_for_new_ones(tiny_model, cohort):
    df, truth = cohort
    with pytest.raises(InputError, match=r"only in case \('SITE_01' for 'site_01'\)") as err:
        tiny_model.score(df.head(3).assign(site="SITE_01"))
    assert "adapt" not in str(err.value)  # a spelling is not a new site
    with pytest.raises(InputError, match=r"'sex' holds \['female', 'male'\] and the model knows \['0', '1'\], none"):
        tiny_model.score(df.head(6).assign(sex=["female", "male"] * 3))  # another coding, not two new levels
    blank = df.head(4).astype({"sex": float})
    blank.loc[blank.index[2], "sex"] = np.nan
    with pytest.raises(InputError, match=r"'sex' is empty in 1 row\(s\)") as err:
        tiny_model.score(blank)
    assert "adapt" not in str(err.value)
    renamed = df.head(3).rename(columns={c: c.upper() for c in truth.idp_names})
    expected = f"{len(truth.idp_names)} of them spelled otherwise .*'{truth.idp_names[0].upper()}'"
    with pytest.raises(InputError, match=expected):
        tiny_model.score(renamed)

def test_missing_idp_value_gives_missing_score_only_there(tiny_model, cohort):
    df, truth = cohort
    rows = df.head(3).copy()
    rows.loc[rows.index[0], truth.idp_names[1]] = np.nan
    out = tiny_model.score(rows)
    assert np.isnan(out[f"z:{truth.idp_names[1]}"][0])
    assert np.isfinite(out[f"z:{truth.idp_names[0]}"][0]) and np.isfinite(out["multivariate_d2"][0])


def test_non_numeric_idp_is_refused(tiny_model, cohort):
    df, truth = cohort
    bad = df.head(3).astype({truth.idp_names[0]: object})
    bad.loc[bad.index[0], truth.idp_names[0]] = "n/a"
    with pytest.raises(InputError, match="non-numeric"):
        tiny_model.score(bad)


def test_centiles_long_format_monotone_in_quantile(tiny_model, cohort):
    _, truth = cohort
    cur = tiny_model.centiles([30, 50, 70], quantiles=(0.05, 0.5, 0.95), fixed={"sex": 1}, n_samples=300)
    assert list(cur.columns) == ["age", "sex", "idp", "quantile", "value"]
    assert len(cur) == 3 * 3 * len(truth.idp_names)
    wide = cur.pivot_table(index=["idp", "age"], columns="quantile", values="value")
    assert (np.diff(wide.to_numpy(), axis=1) >= 0).all()


def test_centiles_refuse_unknown_levels_and_covariates(tiny_model):
    with pytest.raises(InputError, match="not seen"):
        tiny_model.centiles([40], fixed={"site": "nowhere"})
    with pytest.raises(InputError, match="cannot fix"):
        tiny_model.centiles([40], fixed={"scanner": "x"})


def test_sample_shape_and_covariates(tiny_model):
    cov = pd.DataFrame({"age": [25.0, 70.0], "sex": [0, 1], "site": ["site_01", "site_02"]})
    out = tiny_model.sample(cov, n=5)
    assert len(out) == 10 and out["sample"].tolist() == list(range(5)) * 2
    assert out["age"].tolist() == [25.0] * 5 + [70.0] * 5
    assert np.isfinite(out[tiny_model.idps].to_numpy()).all()


def test_save_load_round_trip_gives_identical_scores(tiny_model, cohort, tmp_path):
    df, _ = cohort
    tiny_model.save(tmp_path / "m")
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["format"] == "normcore-tabular-diffusion" and card["idps"] == tiny_model.idps
    assert card["training_data"]["n_train"] + card["training_data"]["n_validation"] == 300
    assert "torch" in card["versions"] and card["training"]["val_loss"]
    loaded = NormativeDiffusion.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.score(df.head(8), seed=2), tiny_model.score(df.head(8), seed=2))


def test_model_saved_without_the_per_idp_path_still_loads(cohort, tmp_path):
    """Cards written before the per-IDP path existed name no marginal_width; their weights have none."""
    df, truth = cohort
    without_path = {**TINY["backbone_params"], "marginal_width": 0}
    old = NormativeDiffusion(**{**TINY, "epochs": 1, "backbone_params": without_path})
    old.fit(df, age="age", covariates=["sex"], idps=truth.idp_names[:3]).save(tmp_path / "old")
    card_path = tmp_path / "old" / "model.json"
    card = json.loads(card_path.read_text())
    del card["params"]["backbone_params"]["marginal_width"]
    card["format_version"] = 1  # as such cards were written
    card_path.write_text(json.dumps(card))
    loaded = NormativeDiffusion.load(tmp_path / "old")
    assert loaded.net_.marginal is None
    old.set_params(eta=1.0, log_snr_start=None)  # the sampler such cards ran (see the version 2 test below)
    pd.testing.assert_frame_equal(loaded.score(df.head(5), seed=3), old.score(df.head(5), seed=3))


def test_version_2_cards_keep_sampling_with_the_full_sde_over_the_whole_chain(tiny_model, cohort, tmp_path):
    """Version 2 cards wrote ``eta`` 0.0 (DDIM's) and had no ``log_snr_start``: their dpm++2m-sde ran the full reverse
    SDE over log-SNR steps from the schedule's end, which loading must keep (the new defaults score differently)."""
    df, _ = cohort
    tiny_model.save(tmp_path / "m")
    card_path = tmp_path / "m" / "model.json"
    card = json.loads(card_path.read_text())
    assert card["params"]["eta"] is None and card["params"]["log_snr_start"] == -3.0
    card["params"]["eta"] = 0.0
    del card["params"]["log_snr_start"]
    card["format_version"] = 2
    card_path.write_text(json.dumps(card))
    old = NormativeDiffusion.load(tmp_path / "m")
    assert old.eta == 1.0 and old.log_snr_start is None
    before = tiny_model.get_params()
    try:
        as_before = tiny_model.set_params(eta=1.0, log_snr_start=None).score(df.head(6), seed=4)
    finally:
        tiny_model.set_params(eta=before["eta"], log_snr_start=before["log_snr_start"])
    pd.testing.assert_frame_equal(old.score(df.head(6), seed=4), as_before)
    z = [c for c in as_before if c.startswith("z:")]
    assert not np.allclose(tiny_model.score(df.head(6), seed=4)[z], as_before[z])


def test_log_snr_start_above_the_cleanest_level_is_refused():
    with pytest.raises(InputError, match="log_snr_start"):
        NormativeDiffusion(log_snr_start=6.0).check_params()


def test_fit_is_reproducible_with_a_seed(cohort):
    df, truth = cohort
    fit = lambda seed: NormativeDiffusion(**{**TINY, "epochs": 1, "seed": seed}).fit(
        df, age="age", covariates=["sex"], idps=truth.idp_names[:2])
    a, b, c = fit(1), fit(1), fit(2)
    sa, sb, sc = (m.net_.state_dict() for m in (a, b, c))
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not all(np.array_equal(sa[k], sc[k]) for k in sa)


def test_saint_backbone_fits_and_scores(cohort):
    df, truth = cohort
    model = NormativeDiffusion(**{**TINY, "backbone": "saint", "backbone_params": {"dim": 8, "depth": 1, "heads": 2,
                                                                                  "emb_dim": 8}})
    model.fit(df, age="age", covariates=["sex"], idps=truth.idp_names)
    out = model.score(df.head(5))
    assert np.isfinite(out.filter(like="z:").to_numpy()).all()


def test_constant_columns_and_rows_without_covariates_are_dropped_and_incomplete_rows_kept(cohort):
    df, truth = cohort
    data = df.assign(**{"Left-WM-hypointensities": 0.0})
    data.loc[data.index[:3], truth.idp_names[0]] = np.nan
    data.loc[data.index[3:5], "sex"] = np.nan
    model = NormativeDiffusion(**{**TINY, "epochs": 1}).fit(data, age="age", covariates=["sex"],
                                                            idps=[*truth.idp_names, "Left-WM-hypointensities"])
    assert "Left-WM-hypointensities" not in model.idps
    assert any("all zero" in w for w in model.fit_warnings_)
    assert any("3 row(s) miss some IDP values" in w for w in model.fit_warnings_)
    assert any("2 row(s) miss age or a covariate" in w for w in model.fit_warnings_)
    summary = model.training_summary_
    assert summary["n_train"] + summary["n_validation"] == len(data) - 2 and summary["dropped_rows"] == 2


def test_a_model_trained_on_incomplete_rows_scores_like_one_trained_on_the_complete_table(cohort):
    """A quarter of the training values removed at random: every row is still used (each IDP's marginal stages on
    its observed values, the network on imputed completions with the loss on the observed entries), and the
    held-out scores stay close to the complete-table model's; dropping the incomplete rows instead loses most."""
    df, truth = cohort
    controls = df[df.group == "control"]
    values = controls[truth.idp_names].to_numpy(float).copy()
    values[np.random.default_rng(0).random(values.shape) < 0.25] = np.nan
    gappy = controls.assign(**dict(zip(truth.idp_names, values.T, strict=True)))
    params = {**TINY, "epochs": 20}
    fit = {"age": "age", "covariates": ["sex", "site"], "idps": truth.idp_names}
    full = NormativeDiffusion(**params).fit(controls, **fit)
    model = NormativeDiffusion(**params).fit(gappy, **fit)
    assert model.training_summary_["n_train"] + model.training_summary_["n_validation"] == len(gappy)
    assert model.history_["imputed_completions"] == 8
    assert np.isnan(gappy[truth.idp_names]).any(axis=1).mean() > 0.6
    new = truth.sample(300, seed=11)
    z = [f"z:{c}" for c in truth.idp_names]
    got, ref = model.score(new, seed=1)[z].to_numpy(), full.score(new, seed=1)[z].to_numpy()
    true = np.column_stack([truth.true_z(new[c], new["age"], new["sex"], c, site=new["site"])
                            for c in truth.idp_names])
    assert np.isfinite(got).all()
    assert np.median(np.abs(got - ref)) < 0.15
    assert np.median(np.abs(got - true)) < np.median(np.abs(ref - true)) + 0.05


def test_fit_refuses_bad_tables(cohort):
    df, truth = cohort
    with pytest.raises(InputError, match="not found"):
        NormativeDiffusion(**TINY).fit(df, age="years", idps=truth.idp_names)
    bad = df.astype({truth.idp_names[0]: object})
    bad.loc[bad.index[5], truth.idp_names[0]] = "abc"
    with pytest.raises(InputError, match="non-numeric"):
        NormativeDiffusion(**TINY).fit(bad, age="age", idps=truth.idp_names)
    with pytest.raises(InputError, match="at least 20"):
        NormativeDiffusion(**TINY).fit(df.head(10), age="age", idps=truth.idp_names)


def test_progress_is_reported_and_fit_can_be_cancelled(cohort):
    from normcore._utils.progress import Cancelled, Progress

    df, truth = cohort
    seen = []
    progress = Progress()

    def on_update(stage, done, total, **info):
        seen.append((stage, done, total))
        progress.cancel()  # a Cancel button pressed after the first report

    progress.callback = on_update
    model = NormativeDiffusion(**{**TINY, "epochs": 50})
    with pytest.raises(Cancelled):
        model.fit(df, age="age", covariates=["sex"], idps=truth.idp_names, progress=progress)
    assert seen and seen[0][0] == "train" and seen[0][1] < seen[0][2]
    assert not hasattr(model, "net_")  # nothing half-fitted is left behind


def test_unknown_backbone_setting_is_an_input_error_before_training(cohort):
    df, truth = cohort
    model = NormativeDiffusion(**{**TINY, "backbone_params": {"widht": 8}})
    with pytest.raises(InputError, match=r"\['widht'\].*film-mlp"):
        model.fit(df, age="age", covariates=["sex"], idps=truth.idp_names[:2])
    assert not model.is_fitted


def test_a_model_fitted_on_a_gpu_loads_on_a_cpu_machine(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m")
    card_path = tmp_path / "m" / "model.json"
    card = json.loads(card_path.read_text())
    card["params"]["device"] = "cuda"
    card_path.write_text(json.dumps(card))
    loaded = NormativeDiffusion.load(tmp_path / "m")
    assert loaded.device_.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_library_messages_do_not_name_command_line_flags(tiny_model):
    """Bug: the library's messages named CLI flags (--set) that a Python or dashboard user never typed."""
    with pytest.raises(InputError) as err:
        tiny_model.centiles([40.0], fixed={"sex": 9})
    assert "--" not in str(err.value) and "sex=9" in str(err.value)


def test_quasi_random_noise_steadies_scores_and_leaves_samples_independent(tiny_model, cohort):
    """``sampling_noise="sobol"`` (the default) serves estimates: the same subjects' z-scores move less from one seed
    to the next than with pseudo-random noise (Monte-Carlo error), while drawn samples stay independent draws,
    identical under both settings."""
    df, truth = cohort
    rows = df[df.group == "control"].head(60)
    cols = [f"z:{name}" for name in truth.idp_names]
    spread, samples = {}, {}
    try:
        for noise in ("pseudo-random", "sobol"):
            tiny_model.sampling_noise = noise
            z = np.stack([tiny_model.score(rows, seed=s)[cols].to_numpy() for s in (1, 2, 3)])
            spread[noise] = float(z.var(axis=0, ddof=1).mean())
            samples[noise] = tiny_model.sample(rows.head(3), n=20, seed=4)
    finally:
        tiny_model.sampling_noise = "sobol"
    assert spread["sobol"] < 0.8 * spread["pseudo-random"]
    pd.testing.assert_frame_equal(samples["sobol"], samples["pseudo-random"])
    with pytest.raises(InputError, match="sampling_noise"):
        NormativeDiffusion(sampling_noise="halton").check_params()


def test_a_per_idp_path_widened_by_the_training_rows_loads_at_its_width(tmp_path, monkeypatch):
    """The automatic width depends on the training rows, which loading does not know: it is read from the weights."""
    from normcore.nets import film_mlp
    from normcore.tabular.synthetic import make_synthetic
    df, truth = make_synthetic(200, d=60, seed=0)
    monkeypatch.setattr(film_mlp, "MARGINAL_WIDTH_ROWS", 120)  # 180 training rows: sqrt(1.5) x the 60-IDP width
    model = NormativeDiffusion(**{**TINY, "epochs": 1}).fit(df, age="age", covariates=["sex"], idps=truth.idp_names)
    monkeypatch.undo()
    assert model.training_summary_["n_train"] == 180
    assert film_mlp.auto_marginal_width(60) == 23 and model.net_.marginal.hidden.in_features == 29
    model.save(tmp_path / "m")
    assert "marginal_width" not in json.loads((tmp_path / "m" / "model.json").read_text())["params"]["backbone_params"]
    loaded = NormativeDiffusion.load(tmp_path / "m")
    assert loaded.net_.marginal.hidden.in_features == 29
    pd.testing.assert_frame_equal(loaded.score(df.head(4), seed=1), model.score(df.head(4), seed=1))


def test_a_kept_gaussian_copula_saves_its_correlation_and_refuses_weights_without_it(cohort, tmp_path):
    """When no trained state beats the copula candidate on the validation loss (here nothing can be learnt), the
    model is the copula: the training latents' (shrunk) correlation, saved beside the untrained network's weights."""
    from safetensors.torch import load_file, save_file

    df, truth = cohort
    controls = df[df.group == "control"]
    model = NormativeDiffusion(**{**TINY, "epochs": 2, "lr": 1e-12})
    model.fit(controls, age="age", covariates=["sex", "site"], idps=truth.idp_names)
    history = model.history_
    assert history["kept_step"] == history["loss_kept_step"] == 0 < history["trained_step"]
    assert min(history["val_loss"]) > history["initial_val_loss"] == history["kept_val_loss"]
    assert "val_crps_copula" not in history  # the loss already chose the copula: nothing sampled
    from normcore.diffusion import wrap_denoiser
    with_network = wrap_denoiser(model.net_, model.schedule_, "gaussian-residual", model.prior_)
    xt, t = torch.randn(5, 4), torch.tensor([0, 10, 50, 90, 99])
    cond = torch.from_numpy(model.encoder_.encode(np.full(5, 40.0), model.encoder_.codes(controls.head(5)))).float()
    with torch.no_grad():
        assert torch.equal(model.net_(xt, t, cond), torch.zeros_like(xt))  # the untrained network, restored
    # sampling skips the untrained network, which adds exactly nothing
    assert torch.equal(model._eps_fn()(xt, t, cond), with_network(xt, t, cond))
    basis, eigvals = model.prior_["prior_basis"], model.prior_["prior_eigvals"]
    prior_corr = (basis @ torch.diag(eigvals) @ basis.T).numpy()
    latents = model._to_latent(controls[truth.idp_names].to_numpy(float), controls["age"].to_numpy(float),
                               model.encoder_.codes(controls))
    sample_corr = np.corrcoef(latents.T)
    assert np.allclose(np.diag(prior_corr), 1, atol=1e-5)
    off = ~np.eye(4, dtype=bool)
    assert np.abs(sample_corr[off]).max() > 0.2  # the cohort's IDPs are correlated
    assert np.abs(prior_corr - sample_corr).max() < 0.06  # the prior holds their correlation,
    # shrunk towards none: the prior is fitted to the training rows' leave-one-out latents, these are the full fit's,
    # so a correlation near zero can differ either way by a little; all together they shrink
    assert np.abs(prior_corr[off]).sum() < np.abs(sample_corr[off]).sum()
    model.save(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    assert {"prior.prior_basis", "prior.prior_eigvals"} <= set(weights)
    loaded = NormativeDiffusion.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.score(df.head(6), seed=4), model.score(df.head(6), seed=4))
    save_file({k: v for k, v in weights.items() if not k.startswith("prior.")}, tmp_path / "m" / "model.safetensors")
    with pytest.raises(InputError, match="prior_basis"):
        NormativeDiffusion.load(tmp_path / "m")


class _ShiftedNormalResidual(torch.nn.Module):
    """The residual that turns the standard-normal denoiser into the exact denoiser of N(shift, I)."""

    def __init__(self, schedule, shift: float):
        super().__init__()
        self.abar, self.shift = schedule.alphas_cumprod.float(), shift

    def forward(self, xt, t, cond):
        a = self.abar[t.long()].view(-1, *([1] * (xt.dim() - 1)))
        return (-(a * (1 - a)).sqrt() * self.shift).expand_as(xt)


def test_the_copula_or_the_network_is_kept_by_the_validation_rows_crps(tiny_model, cohort):
    """Where the validation loss prefers the trained network, the copula replaces it only when its CRPS is
    significantly lower: rows shifted as the network's samples are keep the network, rows like the training latents
    keep the copula. Where the loss prefers the copula, it stays without sampling."""
    from normcore.diffusion.parameterisation import GaussianCopulaResidual

    df, truth = cohort
    controls = df[df.group == "control"]
    model = copy.deepcopy(tiny_model)  # the shared fixture stays as it was
    age, codes = controls["age"].to_numpy(float), tiny_model.encoder_.codes(controls)
    x = model._to_latent(controls[truth.idp_names].to_numpy(float), age, codes)
    copula = GaussianCopulaResidual(tiny_model.net_, model.schedule_, 4).fit_correlation(torch.from_numpy(x))
    model.net_ = _ShiftedNormalResidual(model.schedule_, 1.0)
    history = {"kept_step": 75, "trained_step": 75, "initial_val_loss": 1.1, "trained_val_loss": 1.0}
    from normcore._utils.progress import Progress
    kept = model._choose_copula_or_network(copula, x + 1.0, age, codes, history, Progress())
    assert kept["kept_step"] == kept["loss_kept_step"] == 75 and model.prior_ == {}
    assert kept["val_crps_trained"] < kept["val_crps_copula"] and kept["kept_val_loss"] == 1.0
    assert kept["val_crps_p"] > 0.5  # the copula is worse: the loss's choice stands
    assert kept["val_crps_rows"] == 64  # so clearly that the test stopped at its interim rows
    kept = model._choose_copula_or_network(copula, x, age, codes, history, Progress())
    assert kept["kept_step"] == 0 and kept["kept_val_loss"] == 1.1 and kept["val_crps_p"] < 0.025
    assert kept["val_crps_rows"] == min(len(x), 256)  # the copula is kept only on all the rows' test
    assert kept["val_crps_copula"] < kept["val_crps_trained"]
    assert torch.equal(model.prior_["prior_basis"], copula.prior_state()["prior_basis"])
    model.prior_ = {}
    kept = model._choose_copula_or_network(copula, x + 1.0, age, codes, {**history, "kept_step": 0}, Progress())
    assert kept["kept_step"] == 0 and "val_crps_trained" not in kept and model.prior_


def test_without_the_copula_candidate_step_0_is_the_untrained_network(cohort):
    df, truth = cohort
    controls = df[df.group == "control"]
    model = NormativeDiffusion(**{**TINY, "epochs": 2, "lr": 1e-12, "copula_candidate": False})
    model.fit(controls, age="age", covariates=["sex", "site"], idps=truth.idp_names)
    assert model.prior_ == {} and type(model._eps_fn()).__name__ == "GaussianResidual"
    assert model.history_["step0_denoiser"] == "untrained network"
    # the independent-normal step 0 is what every (untrainable) state is: none of them differs from it
    assert abs(min(model.history_["val_loss"]) - model.history_["initial_val_loss"]) < 1e-4


def test_scores_say_which_levels_never_measured_an_idp_in_training(cohort):
    df, truth = cohort
    controls = df[df.group == "control"]
    gappy = controls.copy()
    gappy.loc[gappy.site == "site_02", truth.idp_names[1]] = np.nan
    model = NormativeDiffusion(**{**TINY, "epochs": 1}).fit(gappy, age="age", covariates=["sex", "site"],
                                                            idps=truth.idp_names)
    assert model.training_summary_["unmeasured_levels"] == {"site": {"site_02": [truth.idp_names[1]]}}
    notes = model.score(controls.head(40)).attrs["notes"]
    assert any("site 'site_02' had no training value of 1 IDP(s)" in n and "--refine site" in n for n in notes)
    elsewhere = controls[controls.site != "site_02"].head(20)
    assert not any("had no training value" in n for n in model.score(elsewhere).attrs["notes"])
    # refining the level with its controls estimates the unmeasured IDP as for a new level (the other levels'
    # spread as prior, not a precision from training rows it never had), and the note goes
    site = controls[controls.site == "site_02"]
    adapted = model.adapt(site.head(25), refine=["site"])
    record = adapted.adaptation_[-1]["levels"][0]
    assert record["level"] == "site_02" and record["newly_measured"] == [truth.idp_names[1]]
    assert not any("had no training value" in n for n in adapted.score(site).attrs["notes"])
    k = model.encoder_.categorical.index("site")
    code = model.encoder_.levels["site"].index("site_02")
    before = model.location_scale_.level_effect(k, code)[0]
    after = adapted.location_scale_.level_effect(k, code)[0]
    moved = np.abs(after - before)
    assert moved[1] > 3 * np.delete(moved, 1).max()  # the unmeasured IDP learns from the controls, the others barely


def test_a_level_or_age_extreme_only_validation_drew_is_still_the_models_own(cohort):
    """A site of one subject, who is also the oldest, drawn first for validation by the seed's permutation: the
    fitted model knows the site and the age, so its own training table scores without error or out_of_range."""
    df, truth = cohort
    data = df[df.group == "control"].reset_index(drop=True)
    first = int(np.random.default_rng(0).permutation(len(data))[0])  # the split's first validation row, seed 0
    data.loc[first, "site"] = "one-subject site"
    data.loc[first, "age"] = data["age"].max() + 1.0
    model = NormativeDiffusion(**{**TINY, "epochs": 1, "seed": 0}).fit(data, age="age", covariates=["sex", "site"],
                                                                     idps=truth.idp_names)
    assert "one-subject site" in model.levels_["site"]
    assert model.age_range_ == (data["age"].min(), data["age"].max())
    scores = model.score(data)
    assert not scores["out_of_range"].any()
    assert np.isfinite(scores.filter(like="z:").to_numpy()).all()
