"""The imaging model at the tiny configuration: fit, restore, score, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from normcore._utils.errors import InputError
from normcore.imaging.latent_space import parse_sex
from normcore.imaging.model import METHODS, ImagingNormativeModel


def test_parse_sex_codings():
    assert [parse_sex(s) for s in ("M", "male", 1, "1", "F", "female", 0, "0.0")] == [1, 1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(InputError, match="sex 'X'"):
        parse_sex("X")


def test_restore_all_methods_shapes_and_ranges(tiny_imaging_model, tiny_cohort):
    c = tiny_cohort
    out = tiny_imaging_model.restore(c["volumes"][12:], c["ages"][12:], c["sexes"][12:], METHODS)
    for method in METHODS:
        assert out[method].shape == (2, *c["grid"].shape)
        assert out[method].min() >= 0 and out[method].max() <= 1
    assert out["kl-inpaint_mask"].shape == (2,) and (0 <= out["kl-inpaint_mask"]).all()
    assert (out["kl-inpaint_mask"] <= 1).all()


def test_score_returns_maps_index_and_centile(tiny_imaging_model, tiny_cohort):
    c = tiny_cohort
    vol, brain = c["volumes"][12], c["brains"][12]
    res = tiny_imaging_model.score(vol, brain, 45.0, "F")
    assert res.anomaly.shape == vol.shape and (res.anomaly[~brain] == 0).all()
    assert (res.zmap[~brain] == 0).all()
    assert set(res.index) == {"top1", "top5", "peak"} and res.index["peak"] >= res.index["top1"] >= res.index["top5"]
    assert res.headline == "top1" and res.headline_label == "top 1%"  # the tiny configuration's headline
    assert 0 <= res.centile["top1"] <= 100
    lesioned = vol.copy()
    lesioned[brain] = np.where(np.random.default_rng(1).random(brain.sum()) < 0.05, 0.0, lesioned[brain])
    worse = tiny_imaging_model.score(lesioned, brain, 45.0, "F", method="autoencoder")
    healthy = tiny_imaging_model.score(vol, brain, 45.0, "F", method="autoencoder")
    assert worse.index["top1"] > healthy.index["top1"]  # dropped-out voxels raise the extreme-value index


def test_out_of_range_age_is_flagged(tiny_imaging_model, tiny_cohort):
    c = tiny_cohort
    res = tiny_imaging_model.score(c["volumes"][12], c["brains"][12], 5.0, "M")
    assert any("outside the training range" in w for w in res.warnings)


def test_wrong_grid_and_unknown_method_are_refused(tiny_imaging_model, tiny_cohort):
    with pytest.raises(InputError, match="do not match the model grid"):
        tiny_imaging_model.restore(np.zeros((1, 8, 8, 8)), [40], ["M"])
    with pytest.raises(InputError, match="unknown restoration method"):
        tiny_imaging_model.restore(tiny_cohort["volumes"][:1], [40], ["M"], ("magic",))


def test_save_load_round_trip_gives_identical_results(tiny_imaging_model, tiny_cohort, tmp_path):
    c = tiny_cohort
    tiny_imaging_model.save(tmp_path / "m")
    loaded = ImagingNormativeModel.load(tmp_path / "m", device="cpu")
    a = tiny_imaging_model.score(c["volumes"][13], c["brains"][13], 50.0, "M", seed=3)
    b = loaded.score(c["volumes"][13], c["brains"][13], 50.0, "M", seed=3)
    np.testing.assert_array_equal(a.restoration, b.restoration)
    assert a.index == b.index and a.centile == b.centile


def test_too_few_scans_is_an_input_error(tiny_cohort):
    c = tiny_cohort
    with pytest.raises(InputError, match="at least 4 training"):
        ImagingNormativeModel("tiny", device="cpu").fit(c["volumes"][:2], c["brains"][:2], [30, 40], ["M", "F"],
                                                        c["volumes"][2:6], c["brains"][2:6], [1] * 4, ["M"] * 4)


def test_gpu_and_cpu_configurations_build_from_the_same_code():
    sizes = {}
    for name in ("cpu", "gpu"):
        model = ImagingNormativeModel(name, device="cpu")
        model._build()
        sizes[name] = (model.latent_shape_, len(model.denoiser_.net.pos[0]))
    assert sizes["cpu"] == ((4, 20, 24, 20), 150)  # 4 mm grid, 8 mm latent, 4^3 patches
    assert sizes["gpu"] == ((4, 20, 24, 20), 1200)  # 2 mm grid, 8 mm latent, 2^3 patches


def test_index_margin_keeps_an_artefact_at_the_brain_edge_out_of_the_index(tiny_imaging_model, tiny_cohort):
    import copy

    from scipy import ndimage

    c = tiny_cohort
    vol, brain = c["volumes"][12], c["brains"][12]
    rim = brain & ~ndimage.binary_erosion(brain)  # the outer voxel layer, as a mask a voxel too wide adds it
    edged = vol.copy()
    edged[rim] = np.where(np.random.default_rng(2).random(rim.sum()) < 0.3, 1.0, edged[rim])
    model = copy.deepcopy(tiny_imaging_model)
    shift, zmaps = {}, {}
    for margin in (0, 2):
        model.config = model.config.replace(index_margin=margin)
        clean = model.score(vol, brain, 45.0, "F", method="autoencoder")
        art = model.score(edged, brain, 45.0, "F", method="autoencoder")
        zmaps[margin] = art.zmap
        shift[margin] = art.index["top1"] - clean.index["top1"]
        assert art.index_inset_mm == (model.config.edge_erosion + margin) * model.grid.spacing_mm
    np.testing.assert_array_equal(zmaps[0], zmaps[2])  # the margin changes the index only, not the z-map
    assert shift[0] > 1.0  # the rim dominates the index without a margin
    assert abs(shift[2]) < 0.5 * shift[0]  # and hardly moves it with one


def test_index_within_template_ranks_only_voxels_inside_the_template_brain(tiny_imaging_model):
    import copy

    from scipy import ndimage

    from normcore.imaging.anomaly import TOPS, abnormality_index, index_region
    from normcore.imaging.grid import template_on_grid

    template_brain = template_on_grid(tiny_imaging_model.grid)[1]
    leaky = ndimage.binary_dilation(template_brain, iterations=2)  # a mask that leaks beyond the template's brain
    z = np.where(leaky, np.random.default_rng(3).standard_normal(leaky.shape), 0.0)
    z[leaky & ~template_brain] += 20.0  # the leak's voxels are wildly "abnormal"
    model = copy.deepcopy(tiny_imaging_model)
    indices = {}
    for within in (False, True):
        model.config = model.config.replace(index_within_template=within)
        indices[within] = model.indices(z, leaky)
    assert indices[False]["top1"] > 15  # the leak dominates an index over the whole mask
    region = index_region(leaky, model.config.index_margin, template_brain)
    assert indices[True] == {k: abnormality_index(z, region, t) for k, t in TOPS.items()}
    assert indices[True]["top1"] < 5


def test_brain_age_is_fitted_from_ten_scans_and_saved_with_the_model(tiny_imaging_model, tiny_cohort, tmp_path):
    """The tiny model saw 8 training scans, too few for a read-out; its first stage gains one from 10 (the read-out
    depends on the first stage only), which is saved and loaded with the model."""
    import copy

    c = tiny_cohort
    assert tiny_imaging_model.brain_age(c["volumes"][12:], c["ages"][12:]) is None
    tiny_imaging_model.save(tmp_path / "none")
    assert json.loads((tmp_path / "none" / "model.json").read_text())["brain_age"] is None
    model = copy.copy(tiny_imaging_model)
    readout = model.fit_brain_age(c["volumes"][:10], c["ages"][:10], c["volumes"][10:12], c["ages"][10:12])
    assert readout.reference_gaps_.size == 12 and tiny_imaging_model.brain_age_ is None
    scores = model.brain_age(c["volumes"][12:], c["ages"][12:])
    assert len(scores) == 2 and all(0 <= b.centile <= 1 and b.n_reference == 12 for b in scores)
    model.save(tmp_path / "with")
    card = json.loads((tmp_path / "with" / "model.json").read_text())
    assert card["brain_age"]["n_reference"] == 12
    loaded = ImagingNormativeModel.load(tmp_path / "with", device="cpu")
    assert [b.to_dict() for b in loaded.brain_age(c["volumes"][12:], c["ages"][12:])] == [b.to_dict() for b in scores]
