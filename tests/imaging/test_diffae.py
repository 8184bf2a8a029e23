"""The normative diffusion autoencoder at the tiny configuration: inversion, counterfactuals, latent scores, saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from normcore._utils.errors import InputError
from normcore.diffusion.samplers import ddim_decode
from normcore.imaging.diffae import COUNTERFACTUAL_MODES, NormativeDiffusionAutoencoder


def test_inversion_round_trip_reproduces_the_latent_and_the_autoencoder_image(tiny_diffae, diffae_cohort):
    m, c = tiny_diffae, diffae_cohort
    vols, ages, sexes = c["volumes"][22:25], c["ages"][22:25], c["sexes"][22:25]
    z0, semantic, code = m.invert(vols, ages, sexes)
    assert semantic.shape == (3, 4) and code.shape == z0.shape
    cond = m.conditions(ages, sexes, semantic)
    z_back = ddim_decode(m._eps, m.schedule, code, cond, m.inversion_steps)
    assert float((z_back - z0).abs().mean()) < 0.03 * float(z0.abs().mean())
    recon = m.reconstruct(vols, ages, sexes)
    assert np.abs(recon - m.decode(z0)).mean() < 0.01  # the autoencoder's own image, to within 1% of the range


@pytest.mark.parametrize("mode", COUNTERFACTUAL_MODES)
def test_counterfactual_at_own_age_is_the_reconstruction(tiny_diffae, diffae_cohort, mode):
    m, c = tiny_diffae, diffae_cohort
    vol, age, sex = c["volumes"][23], float(c["ages"][23]), c["sexes"][23]
    cf = m.counterfactual(vol, age, sex, [age, age + 30], mode)
    np.testing.assert_allclose(cf.volumes[0], cf.reconstruction, atol=1e-5)
    np.testing.assert_allclose(cf.reconstruction, m.reconstruct(vol, [age], [sex])[0], atol=1e-5)
    assert cf.ages == [age, age + 30] and cf.differences().shape == (2, *m.grid.shape)


def test_counterfactual_refuses_unknown_modes_and_no_ages(tiny_diffae, diffae_cohort):
    vol = diffae_cohort["volumes"][0]
    with pytest.raises(InputError, match="mode"):
        tiny_diffae.counterfactual(vol, 40, "F", [50], "sideways")
    with pytest.raises(InputError, match="no counterfactual age"):
        tiny_diffae.counterfactual(vol, 40, "F", [], "both")
    for bad in (0.5, 25, "strong"):
        with pytest.raises(InputError, match="age guidance"):
            tiny_diffae.counterfactual(vol, 40, "F", [50], "both", age_guidance=bad)


def test_age_guidance_scales_the_change_and_keeps_the_own_age_exact(tiny_diffae, diffae_cohort):
    """Guidance w decodes with eps(own) + w (eps(new) - eps(own)): the own-age row stays the reconstruction, w = 1 is
    the plain counterfactual, and a larger w moves the counterfactual further from the reconstruction."""
    m, c = tiny_diffae, diffae_cohort
    vol, age, sex = c["volumes"][24], float(c["ages"][24]), c["sexes"][24]
    plain = m.counterfactual(vol, age, sex, [age, age + 30], "condition")
    same = m.counterfactual(vol, age, sex, [age, age + 30], "condition", age_guidance=1.0)
    strong = m.counterfactual(vol, age, sex, [age, age + 30], "condition", age_guidance=4.0)
    np.testing.assert_array_equal(same.volumes, plain.volumes)
    np.testing.assert_allclose(strong.volumes[0], strong.reconstruction, atol=1e-5)
    np.testing.assert_allclose(strong.reconstruction, plain.reconstruction, atol=1e-6)
    change = [np.abs(cf.differences()[1]).mean() for cf in (plain, strong)]
    assert change[1] > 1.5 * change[0] > 0 and strong.guidance == 4.0 and plain.guidance == m.age_guidance == 1.0


def test_semantic_trend_fits_the_training_vectors(tiny_diffae):
    m = tiny_diffae
    fitted = m.semantic_trend(m.train_ages_, m.train_sexes_)
    resid = m.train_semantic_ - fitted
    assert np.abs(resid.mean(0)).max() < 1e-6 * max(1.0, np.abs(m.train_semantic_).max())  # least squares


def test_latent_deviation_scores_and_save_load_round_trip(tiny_diffae, diffae_cohort, tmp_path):
    m, c = tiny_diffae, diffae_cohort
    semantic = m.semantic(c["volumes"][22:])
    devs = m.latent_deviation(semantic, c["ages"][22:], c["sexes"][22:])
    assert len(devs) == 6 and all(0 <= d.centile <= 1 and len(d.per_dimension_z) == 4 for d in devs)
    assert all(d.n_reference == 6 and -1 <= d.cosine_similarity <= 1 for d in devs)
    # the validation scans are the reference: their own centiles are spread over the ranks, mid-rank each
    assert sorted(round(d.centile * 12) for d in devs) == [1, 3, 5, 7, 9, 11]
    d2 = np.array([d.multivariate_d2 for d in devs])
    np.testing.assert_allclose(np.sort(d2), np.sort(m.reference_d2_))
    # a far-off vector is more deviant than every healthy validation scan
    far = m.latent_deviation(semantic[:1] + 50 * semantic.std(0), c["ages"][22:23], c["sexes"][22:23])[0]
    assert far.centile == 1.0 and far.multivariate_d2 > d2.max()
    ages = m.brain_age(c["volumes"][22:], c["ages"][22:])
    assert [b.n_reference for b in ages] == [28] * 6  # cross-fitted over the 22 training and 6 validation scans
    m.save(tmp_path / "dae")
    assert (tmp_path / "dae" / "latent-norms" / "model.json").is_file()
    m.save(tmp_path / "dae")  # a model folder with its nested latent model may be replaced
    loaded = NormativeDiffusionAutoencoder.load(tmp_path / "dae", device="cpu")
    again = loaded.latent_deviation(semantic, c["ages"][22:], c["sexes"][22:])
    assert [d.to_dict() for d in again] == [d.to_dict() for d in devs]
    assert [b.to_dict() for b in loaded.brain_age(c["volumes"][22:], c["ages"][22:])] == [b.to_dict() for b in ages]
    np.testing.assert_allclose(loaded.reconstruct(c["volumes"][:1], c["ages"][:1], c["sexes"][:1]),
                               m.reconstruct(c["volumes"][:1], c["ages"][:1], c["sexes"][:1]), atol=1e-6)
    card = json.loads((tmp_path / "dae" / "model.json").read_text())
    assert card["format"] == "normcore-mri-diffae/1" and card["semantic_dim"] == 4
    assert card["brain_age"]["n_reference"] == 28 and card["brain_age"]["folds"] == 5
    assert set(loaded.healthy_volumes().columns) == {"age", "sex", "ventricle_ml", "tissue_ml"}


def test_fit_refuses_too_few_scans(diffae_cohort):
    c = diffae_cohort
    with pytest.raises(InputError, match="at least 20 training"):
        NormativeDiffusionAutoencoder("tiny", device="cpu").fit(
            c["volumes"][:5], c["brains"][:5], c["ages"][:5], c["sexes"][:5], c["volumes"][5:9], c["brains"][5:9],
            c["ages"][5:9], c["sexes"][5:9])


def test_evidence_text_states_the_cards_held_out_measurements():
    model = NormativeDiffusionAutoencoder("tiny", device="cpu")
    assert model.evidence_text() is None  # an unfitted model, and a card without metrics, has nothing to state
    model.card_ = {"metrics": {"benchmark": "b"}}
    assert model.evidence_text() is None
    model.card_ = {"metrics": {"lesion_auc": {"multivariate_d2": 0.492, "voxel_index_top1": 0.955},
                               "healthy_heldout": {"share_above_0.95": 0.15}}}
    text = model.evidence_text()
    assert "AUC of 0.49 (0.5 is chance)" in text and "reached 0.95" in text and "15% of held-out healthy" in text
    model.card_ = {"metrics": {"lesion_auc": {"multivariate_d2": 0.81}}}
    assert "0.81" in model.evidence_text() and "voxel" not in model.evidence_text()


def test_covariate_dropout_withholds_age_and_sex_in_training_only():
    from normcore.imaging.diffae import SemanticDenoiser

    net = SemanticDenoiser(torch.nn.Identity(), torch.nn.Identity(), covariate_dropout=0.5)
    cov, sem = torch.ones(400, 2), torch.full((400, 3), 7.0)
    net.train()
    torch.manual_seed(0)
    out = net.join(cov, sem)
    assert out.shape == (400, 6) and torch.equal(out[:, 3:], sem)
    dropped = out[:, 2] == 0
    assert 0.4 < float(dropped.float().mean()) < 0.6 and torch.all(out[dropped, :2] == 0)
    assert torch.all(out[~dropped, :3] == 1)
    net.eval()
    assert torch.all(net.join(cov, sem)[:, :3] == 1)  # at inference age and sex are always given
    plain = SemanticDenoiser(torch.nn.Identity(), torch.nn.Identity(), covariate_dropout=0.0).train()
    assert torch.equal(plain.join(cov, sem), torch.cat([cov, sem], 1))


def test_healthy_position_and_age_grid(tiny_diffae):
    m = tiny_diffae
    pos = m.healthy_position(m.train_semantic_[0], 50.0, "F")
    mean, axis = m.principal_axis()
    assert abs(np.linalg.norm(axis) - 1) < 1e-9 and pos["coord"] == pytest.approx((m.train_semantic_[0] - mean) @ axis)
    assert np.corrcoef(pos["healthy_coord"], m.train_ages_)[0, 1] >= 0  # the axis is signed to grow with age
    matched = pos["matched"]
    assert len(matched) == m.matched_k and set(pos["healthy_sex"][matched]) == {"F"}
    lo, hi = m.age_range_
    grid = m.counterfactual_age_grid()
    assert grid and all(lo <= a <= hi and a % 5 == 0 for a in grid) and grid == sorted(grid)


def test_analysis_refuses_a_scan_prepared_for_another_grid(tiny_diffae, diffae_cohort):
    from normcore.imaging.grid import ModelGrid
    from normcore.imaging.latent_pipeline import analyse_prepared
    from normcore.imaging.pipeline import ScanInput

    class Prepared:  # only the grid is looked at before the refusal
        grid = ModelGrid(4.0, (40, 48, 40))

    with pytest.raises(InputError, match="another model grid"):
        analyse_prepared(tiny_diffae, ScanInput("x", 40.0, 0, Prepared(), []))


def test_age_supervision_reads_age_from_the_semantic_vector_and_trains_the_encoder():
    from normcore.imaging.diffae import SemanticDenoiser

    encoder = torch.nn.Linear(5, 3)
    cov, z0 = torch.randn(64, 2), torch.randn(64, 5)
    plain = SemanticDenoiser(encoder, torch.nn.Identity())
    cond, aux = plain.training_condition(cov, z0)
    assert float(aux) == 0.0 and not hasattr(plain, "age_head") and torch.equal(cond, plain.condition(cov, z0))
    net = SemanticDenoiser(encoder, torch.nn.Identity(), age_supervision=2.0, semantic_dim=3)
    cond, aux = net.training_condition(cov, z0)
    expected = 2.0 * (net.age_head(encoder(z0))[:, 0] - cov[:, 0]).pow(2).mean()
    assert torch.equal(cond, net.condition(cov, z0)) and float(aux.detach()) == pytest.approx(float(expected.detach()))
    aux.backward()
    assert encoder.weight.grad is not None and float(encoder.weight.grad.abs().sum()) > 0
    with pytest.raises(InputError, match="age supervision"):
        NormativeDiffusionAutoencoder("tiny", age_supervision=-1)


def test_age_supervised_model_saves_and_loads(diffae_cohort, tmp_path):
    c, tr, va = diffae_cohort, slice(0, 22), slice(22, None)
    model = NormativeDiffusionAutoencoder("tiny", semantic_dim=4, inversion_steps=10, matched_k=3, device="cpu",
                                          age_supervision=1.0, dit_steps=20,
                                          latent_model_params={"epochs": 2, "n_samples": 50, "sampling_steps": 8})
    model.fit(c["volumes"][tr], c["brains"][tr], c["ages"][tr], c["sexes"][tr], c["volumes"][va], c["brains"][va],
              c["ages"][va], c["sexes"][va])
    model.save(tmp_path / "m")
    back = NormativeDiffusionAutoencoder.load(tmp_path / "m", device="cpu")
    assert back.age_supervision == 1.0 and json.loads((tmp_path / "m" / "model.json").read_text())["age_supervision"]
    torch.testing.assert_close(back.net_.age_head.weight, model.net_.age_head.weight)
    np.testing.assert_allclose(back.semantic(c["volumes"][va]), model.semantic(c["volumes"][va]), atol=1e-6)


def test_age_trend_prior_is_the_default_carries_the_training_trend_and_is_in_the_card(tiny_diffae, diffae_cohort,
                                                                                       tmp_path):
    """The prior's mean is the per-element regression of the training latents on age, age^2 and sex (the
    mechanism: tests/diffusion/test_parameterisation.py); a card without the key means the constant prior."""
    c, tr = diffae_cohort, slice(0, 22)
    wrap = tiny_diffae.net_.denoiser
    assert tiny_diffae.latent_prior == "age-trend" and wrap.trend is not None
    latents = tiny_diffae.encode(c["volumes"][tr])[0]
    given = tiny_diffae.conditions(c["ages"][tr], c["sexes"][tr], latents.new_zeros(22, tiny_diffae.semantic_dim))
    fitted = wrap.mean_at(given)
    residual = (latents - fitted).pow(2).mean()
    assert float(residual) < float((latents - latents.mean(0)).pow(2).mean())  # the trend explains part of it
    tiny_diffae.save(tmp_path / "m")
    card_path = tmp_path / "m" / "model.json"
    assert json.loads(card_path.read_text())["latent_prior"] == "age-trend"
    back = NormativeDiffusionAutoencoder.load(tmp_path / "m", device="cpu")
    torch.testing.assert_close(back.net_.denoiser.prior_trend, wrap.prior_trend)
    card = json.loads(card_path.read_text())
    del card["latent_prior"]  # a card from before the option: constant prior, so these weights do not fit it
    card_path.write_text(json.dumps(card))
    with pytest.raises(InputError, match="weights do not match"):
        NormativeDiffusionAutoencoder.load(tmp_path / "m", device="cpu")
    with pytest.raises(InputError, match="latent prior"):
        NormativeDiffusionAutoencoder("tiny", latent_prior="linear")


def test_analysis_renormalises_a_scan_prepared_for_another_normalisation(tiny_diffae, diffae_cohort):
    # the dashboard hands the restoration model's preparation to the diffusion autoencoder; fitted with another
    # intensity_inset_mm, the autoencoder must see the scan as it was trained, as mri-latent prepares it
    import nibabel as nib

    from normcore.imaging.latent_pipeline import analyse_prepared
    from normcore.imaging.pipeline import ScanInput
    from normcore.imaging.preprocess import prepare_scan

    grid = tiny_diffae.grid
    img = nib.Nifti1Image(diffae_cohort["volumes"][3] * 1000, grid.affine)
    own = prepare_scan(img, grid, register=False, intensity_inset_mm=tiny_diffae.config.intensity_inset_mm)
    other = prepare_scan(img, grid, register=False, intensity_inset_mm=20.0)
    scores = [analyse_prepared(tiny_diffae, ScanInput("x", 40.0, 0, p, [])).deviation for p in (own, other)]
    assert scores[0].multivariate_z == pytest.approx(scores[1].multivariate_z, rel=1e-4)
