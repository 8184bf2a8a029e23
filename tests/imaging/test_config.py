"""Imaging configurations: presets, overrides checked by name, cards of every version load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from normcore import InputError, load_model
from normcore.imaging.config import PRESETS, ImagingConfig
from normcore.imaging.model import ImagingNormativeModel


def test_presets_round_trip_and_overrides_apply():
    for name, preset in PRESETS.items():
        assert ImagingConfig.from_dict(preset.to_dict()) == preset, name
    model = ImagingNormativeModel("tiny", dit_steps=7)
    assert model.config.dit_steps == 7 and model.config.ddim_steps == PRESETS["tiny"].ddim_steps


def test_unknown_and_missing_keys_are_refused_by_name():
    with pytest.raises(InputError, match="dit_stepz"):
        ImagingNormativeModel("tiny", dit_stepz=7)
    with pytest.raises(InputError, match="unknown imaging configuration"):
        ImagingNormativeModel("huge")
    values = PRESETS["tiny"].to_dict()
    del values["levels"]
    with pytest.raises(InputError, match="missing key.*levels"):
        ImagingConfig.from_dict(values)


def test_version_1_card_loads_through_the_registry(tiny_imaging_model, tmp_path):
    """Cards before the prior residual had no format_version and no prior_residual key."""
    tiny_imaging_model.save(tmp_path / "m")
    card_path = tmp_path / "m" / "model.json"
    card = json.loads(card_path.read_text())
    assert card["format_version"] == 3 and card["config"]["prior_residual"] is True
    loaded = load_model(tmp_path / "m", device="cpu")
    assert isinstance(loaded, ImagingNormativeModel) and loaded.config == tiny_imaging_model.config
    del card["format_version"], card["config"]["clip_x0"]
    card_path.write_text(json.dumps(card))
    old = load_model(tmp_path / "m", device="cpu", kind="imaging")
    assert old.config.clip_x0 == 6.0 and old.config.prior_residual is True  # the key was there: kept
    del card["config"]["prior_residual"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(InputError, match="weights do not match the model card"):
        load_model(tmp_path / "m", device="cpu")  # a v1 card without the key means a model without the prior


def test_z_map_settings_are_checked_and_old_cards_keep_their_behaviour():
    from normcore.imaging.config import ImagingConfig

    cpu = ImagingConfig.preset("cpu")
    later = ("error_scale", "edge_erosion", "error_power", "index_margin", "intensity_inset_mm",
             "index_within_template", "headline_index")
    assert tuple(getattr(cpu, k) for k in later) == ("scan-median", 1, 2 / 3, 1, 10.0, True, "peak")
    old = ImagingConfig.from_dict({k: v for k, v in cpu.to_dict().items() if k not in later})
    assert tuple(getattr(old, k) for k in later) == ("none", 0, 1.0, 0, 0.0, False, "top1")
    with pytest.raises(InputError, match="index_within_template"):
        cpu.replace(index_within_template=1)
    with pytest.raises(InputError, match="headline_index.*top1"):
        cpu.replace(headline_index="max")
    for bad in (0, 1.5, True, "2/3"):
        with pytest.raises(InputError, match="error_power"):
            cpu.replace(error_power=bad)
    with pytest.raises(InputError, match="error_scale"):
        cpu.replace(error_scale="scan-mean")
    with pytest.raises(InputError, match="edge_erosion"):
        cpu.replace(edge_erosion=-1)
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="index_margin"):
            cpu.replace(index_margin=bad)
    for bad in (-1.0, 100, True, "10"):
        with pytest.raises(InputError, match="intensity_inset_mm"):
            cpu.replace(intensity_inset_mm=bad)


def test_version_2_card_loads_without_a_peak_reference_and_keeps_leading_with_the_top_1_percent(
        tiny_imaging_model, tiny_cohort, tmp_path):
    """Models saved before the peak index: its centile is unknown (NaN), not made up, and the headline stays."""
    from safetensors.torch import load_file, save_file

    tiny_imaging_model.save(tmp_path / "m")
    card_path, weights = tmp_path / "m" / "model.json", tmp_path / "m" / "model.safetensors"
    card = json.loads(card_path.read_text())
    card["format_version"] = 2
    del card["config"]["headline_index"]
    card_path.write_text(json.dumps(card))
    tensors = {k: v for k, v in load_file(weights).items() if not k.endswith(".peak")}
    save_file(tensors, weights)
    old = load_model(tmp_path / "m", device="cpu", kind="imaging")
    assert old.config.headline_index == "top1"
    score = old.score(tiny_cohort["volumes"][12], tiny_cohort["brains"][12], 45.0, "F")
    assert score.headline == "top1" and np.isfinite(score.index["peak"]) and np.isnan(score.centile["peak"])
    assert score.centile["top1"] == tiny_imaging_model.score(tiny_cohort["volumes"][12], tiny_cohort["brains"][12],
                                                             45.0, "F").centile["top1"]
    old.save(tmp_path / "again")  # saved again without a made-up reference, and still loads
    again = load_model(tmp_path / "again", device="cpu", kind="imaging")
    assert np.isnan(again.reference_["kl-inpaint"]["peak"]).all() and again.config.headline_index == "top1"
