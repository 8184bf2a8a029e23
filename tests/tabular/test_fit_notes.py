from types import SimpleNamespace

import numpy as np
from scipy import stats

from normcore.tabular.fit_notes import fit_notes, heavy_tails_note, kept_denoiser, point_masses_note
from normcore.tabular.gaussianisation import IDPTransformer
from normcore.tabular.heavy_tails import age_bins


def test_the_kept_denoiser_is_named_with_why():
    copula = {"prior_basis": 1}
    by_loss = SimpleNamespace(history_={"kept_step": 0, "loss_kept_step": 0}, prior_=copula)
    by_crps = SimpleNamespace(history_={"kept_step": 0, "loss_kept_step": 450, "val_crps_copula": 0.5}, prior_=copula)
    network = SimpleNamespace(history_={"kept_step": 450, "loss_kept_step": 450, "val_crps_copula": 0.5}, prior_={})
    assert kept_denoiser(by_loss).endswith("no trained network beat it on the validation loss")
    assert "step 450 had the lower validation loss but a significantly higher CRPS" in kept_denoiser(by_crps)
    assert kept_denoiser(network).startswith("weights of step 450; lower validation loss than the Gaussian copula")
    assert kept_denoiser(SimpleNamespace(history_={"kept_step": 0}, prior_={})) == "kept: the untrained network"
    assert kept_denoiser(SimpleNamespace(history_={"fit_time_s": 0.1})) == ""  # a baseline: no early stopping


def _transformers():
    rng = np.random.default_rng(0)
    y = np.c_[rng.standard_normal(4000), stats.t.rvs(3, size=4000, random_state=2)]
    return IDPTransformer().fit(y, groups=age_bins(rng.uniform(20, 80, 4000))), IDPTransformer().fit(y)


def test_the_heavy_tailed_sides_are_named():
    heavy, plain = _transformers()
    line = heavy_tails_note(SimpleNamespace(idps=["thickness", "wm_hypo"], transformer_=heavy))
    assert line.startswith("heavy tails: 2 IDP side(s)") and line.endswith(": wm_hypo (lower and upper)")
    assert heavy_tails_note(SimpleNamespace(idps=["thickness", "wm_hypo"], transformer_=plain)) is None
    assert heavy_tails_note(SimpleNamespace(idps=["a"])) is None  # the baselines have no quantile map


def test_fit_notes_gather_every_decision_and_the_warnings():
    heavy, _ = _transformers()
    calibration = SimpleNamespace(describe=lambda: "multivariate score calibrated on 400 out-of-sample rows")
    model = SimpleNamespace(idps=["thickness", "wm_hypo"], transformer_=heavy, history_={"kept_step": 450},
                            prior_={}, multivariate_calibration_=calibration,
                            fit_warnings_=["3 rows missing age were dropped"])
    notes = fit_notes(model)
    assert notes[0] == "Denoiser: weights of step 450." and notes[1].startswith("multivariate score calibrated")
    assert notes[2].startswith("heavy tails: 2") and notes[3] == "warning: 3 rows missing age were dropped"
    assert fit_notes(SimpleNamespace(idps=["a"], history_={})) == []


def test_the_point_masses_are_named_with_their_value_and_share():
    masses = [("5th-Ventricle", "floor", 0.0, 0.988), ("score", "floor", 1.0, 0.25), ("score", "ceiling", 30.0, 0.05)]
    model = SimpleNamespace(is_fitted=True, point_masses_=masses)
    assert point_masses_note(model) == (
        "point masses: 3 IDP value(s) shared by many training rows at an extreme; draws stop there and a value "
        "there is scored within its share: 5th-Ventricle (floor 0, 98.8%), score (floor 1, 25.0%), "
        "score (ceiling 30, 5.0%)")
    assert point_masses_note(SimpleNamespace(is_fitted=True, point_masses_=[])) is None
    assert point_masses_note(SimpleNamespace(idps=["a"])) is None  # not fitted
