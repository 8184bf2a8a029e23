"""Cross-fitted healthy reference: no scan is restored by a denoiser that trained on it, nor is its own reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from normcore._utils.errors import InputError
from normcore.imaging.anomaly import abnormality_index, healthy_error_stats, voxel_zmap
from normcore.imaging.crossfit import assign_folds, cross_fit, use_cross_fitted_reference
from normcore.imaging.model import ImagingNormativeModel


def test_folds_are_balanced_and_age_stratified():
    ages = np.random.default_rng(3).uniform(20, 80, 103)
    fold = assign_folds(ages, 5, seed=0)
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    # each run of 5 scans in age order lands in 5 different folds, so each fold spans the whole age range
    order = np.argsort(ages)
    for start in range(0, 100, 5):
        assert len(set(fold[order[start:start + 5]])) == 5
    assert np.ptp([ages[fold == k].mean() for k in range(5)]) < 5


@pytest.fixture(scope="module")
def traced_cross_fit(tiny_imaging_model, tiny_cohort):
    """Cross-fit 12 tiny scans in 2 folds, recording which scans each fold denoiser trained on, took its KL
    thresholds from and restored (scans are told apart by their voxel values)."""
    c = tiny_cohort
    vols, brains = c["volumes"][:12], c["brains"][:12]
    key = {vols[i].tobytes(): i for i in range(12)}
    events: list[tuple[int, str, set[int]]] = []

    def traced(method: str, what: str):
        real = getattr(ImagingNormativeModel, method)

        def wrapper(self, volumes, *args, **kwargs):
            events.append((id(self), what, {key[np.asarray(v, np.float32).tobytes()] for v in volumes}))
            return real(self, volumes, *args, **kwargs)
        return wrapper

    with pytest.MonkeyPatch.context() as mp:
        for method, what in (("fit_stages", "train"), ("calibrate_kl", "kl"), ("restore", "restore")):
            mp.setattr(ImagingNormativeModel, method, traced(method, what))
        ref = cross_fit(tiny_imaging_model, vols, brains, c["ages"][:12], c["sexes"][:12], folds=2)
    return ref, events, vols, brains


def test_no_scan_is_restored_by_a_denoiser_that_saw_it(traced_cross_fit):
    ref, events, _, _ = traced_cross_fit
    restored_by: dict[int, list[int]] = {}
    for model, what, scans in events:
        trained = next(s for m, w, s in events if m == model and w == "train")
        if what == "restore":
            assert not scans & trained
            for s in scans:
                restored_by.setdefault(s, []).append(model)
        if what == "kl":
            assert not scans & trained
    assert sorted(restored_by) == list(range(12)) and all(len(v) == 1 for v in restored_by.values())
    # the KL thresholds that restored a scan never came from that scan
    last_kl: dict[int, set[int]] = {}
    for model, what, scans in events:
        if what == "kl":
            last_kl[model] = scans
        elif what == "restore" and model in last_kl:
            assert not scans & last_kl[model]
    assert ref.info["scheme"] == "cross-fitted" and ref.info["n"] == 12 and ref.info["fold_train_n"] == [6, 6]


def test_reference_is_leave_one_out_over_every_scan(traced_cross_fit, tiny_imaging_model, tiny_cohort, tmp_path):
    ref, _, vols, brains = traced_cross_fit
    c = tiny_cohort
    model = ImagingNormativeModel.load(tiny_imaging_model.save(tmp_path / "m"), device="cpu")
    model.set_reference(ref.errors, ref.info)
    maps, scored = ref.errors["kl-inpaint"]
    for i in (0, 7):  # scan i's reference index uses the statistics of the other 11 scans only
        others = np.arange(12) != i
        mean, std = healthy_error_stats(maps[others], scored[others])
        expected = abnormality_index(voxel_zmap(maps[i], mean, std, scored[i]), scored[i], 0.01)
        assert model.reference_["kl-inpaint"]["top1"][i] == pytest.approx(expected)
    assert len(model.reference_["kl-inpaint"]["top1"]) == 12
    saved = ImagingNormativeModel.load(model.save(tmp_path / "cf"), device="cpu")
    assert saved.reference_info_["scheme"] == "cross-fitted" and saved.reference_info_["n"] == 12
    score = saved.score(c["volumes"][12], c["brains"][12], c["ages"][12], c["sexes"][12], seed=0)
    assert score.n_reference == 12
    assert score.reference_text() == ("12 healthy scans, each restored by a denoiser that never trained on it "
                                      "(cross-fitted), in steps of 8.3 centile points")


def test_cross_fitting_refuses_too_few_scans(tiny_imaging_model, tiny_cohort):
    c = tiny_cohort
    with pytest.raises(InputError, match="at least 12 healthy scans"):
        use_cross_fitted_reference(tiny_imaging_model, c["volumes"][:10], c["brains"][:10], c["ages"][:10],
                                   c["sexes"][:10], folds=3)
    with pytest.raises(InputError, match="at least 2 folds"):
        cross_fit(tiny_imaging_model, c["volumes"], c["brains"], c["ages"], c["sexes"], folds=1)


def test_models_before_cross_fitting_report_their_validation_reference(tiny_imaging_model, tmp_path):
    path = tiny_imaging_model.save(tmp_path / "old")
    card = json.loads((path / "model.json").read_text())
    card.pop("reference")
    (path / "model.json").write_text(json.dumps(card))
    old = ImagingNormativeModel.load(path, device="cpu")
    assert old.reference_info_ == {"scheme": "validation", "n": 4}
    volume = np.full(old.grid.shape, 0.5, np.float32)
    score = old.score(volume, volume > 0, 40, "F", seed=0)
    assert score.reference_text() == "4 healthy validation scans, in steps of 25.0 centile points"


def test_the_centile_carries_its_measured_reproducibility_only_for_the_index_it_was_measured_on(
        tiny_imaging_model, tmp_path):
    path = tiny_imaging_model.save(tmp_path / "measured")
    card = json.loads((path / "model.json").read_text())
    headline = card["config"].get("headline_index", "top1")
    volume = np.full(tiny_imaging_model.grid.shape, 0.5, np.float32)
    for index, expected in ((headline, 26.3), ("top5" if headline != "top5" else "top1", None)):
        card["reproducibility"] = {"case": "resliced by a quarter voxel", "method": "kl-inpaint", "index": index,
                                   "mean_abs_centile_shift": 26.3, "n": 20}
        (path / "model.json").write_text(json.dumps(card))
        score = ImagingNormativeModel.load(path, device="cpu").score(volume, volume > 0, 40, "F", seed=0)
        assert score.reproducibility == expected and score.smoothing_shift is None  # no trilinear twin measured
        assert ("moved its centile by 26 points on average" in score.reference_text()) == (expected is not None)
    card["reproducibility"] = {"case": "resliced by a quarter voxel (cubic spline)", "method": "kl-inpaint",
                               "index": headline, "mean_abs_centile_shift": 7.9, "n": 20,
                               "smoothing_mean_abs_centile_shift": 26.3}
    (path / "model.json").write_text(json.dumps(card))
    score = ImagingNormativeModel.load(path, device="cpu").score(volume, volume > 0, 40, "F", seed=0)
    assert (score.reproducibility, score.smoothing_shift) == (7.9, 26.3)
    assert score.reference_text().endswith("moved its centile by 8 points on average, smoothing it slightly (a "
                                           "trilinear reslice) by 26: the index follows how smooth a scan is")
    resaved = ImagingNormativeModel.load(path, device="cpu").save(tmp_path / "resaved")
    assert "reproducibility" not in json.loads((resaved / "model.json").read_text())  # measured for those weights
