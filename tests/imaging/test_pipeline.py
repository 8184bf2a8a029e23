"""Scan input for a fitted model: the scan is prepared as the model's configuration says."""

from __future__ import annotations

import copy

import nibabel as nib
import numpy as np

from normcore.imaging.pipeline import prepare_input
from normcore.imaging.preprocess import prepare_scan, renormalised


def test_scan_is_normalised_as_the_model_was_trained(tiny_imaging_model, tiny_cohort, tmp_path):
    grid = tiny_cohort["grid"]
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(tiny_cohort["volumes"][12] * 1000, grid.affine), path)
    inset_model = copy.copy(tiny_imaging_model)
    inset_model.config = tiny_imaging_model.config.replace(intensity_inset_mm=20.0)
    got = {m.config.intensity_inset_mm: prepare_input(m, path, 40.0, "F", register=False).prepared.volume
           for m in (tiny_imaging_model, inset_model)}
    for inset, volume in got.items():
        expected = prepare_scan(nib.load(path), grid, register=False, intensity_inset_mm=inset).volume
        np.testing.assert_array_equal(volume, expected)
    assert np.abs(got[20.0] - got[0.0]).max() > 0.01


def test_a_scan_prepared_for_another_normalisation_is_renormalised(tiny_cohort, tmp_path):
    grid = tiny_cohort["grid"]
    img = nib.Nifti1Image(tiny_cohort["volumes"][3] * 1000, grid.affine)
    plain = prepare_scan(img, grid, register=False)
    inset = prepare_scan(img, grid, register=False, intensity_inset_mm=20.0)
    assert renormalised(plain, 0.0) is plain
    again = renormalised(plain, 20.0)
    assert again.intensity_inset_mm == 20.0 and plain.intensity_inset_mm == 0.0
    np.testing.assert_allclose(again.volume, inset.volume, atol=1e-6)
    assert np.abs(again.volume - plain.volume).max() > 0.01


def test_a_saved_prepared_volume_keeps_its_intensities_when_the_model_normalises_the_same_way(
        tiny_imaging_model, tiny_cohort, tmp_path):
    """A prepared volume saved on the grid (the demo scans) is scored as it was prepared: normalising the grid volume
    again would move its percentiles; a volume normalised for another setting is normalised as usual."""
    grid = tiny_cohort["grid"]
    native = nib.Nifti1Image(tiny_cohort["volumes"][5] * 1000, grid.affine)
    inset = tiny_imaging_model.config.intensity_inset_mm
    prepared = prepare_scan(native, grid, register=False, intensity_inset_mm=inset)
    path = tmp_path / "prepared.nii.gz"
    nib.save(nib.Nifti1Image(prepared.volume * 0.8, grid.affine), path)  # a scale a second normalisation would undo
    kept = prepare_input(tiny_imaging_model, path, 40.0, "F", register=False, normalised_inset_mm=inset).prepared
    np.testing.assert_allclose(kept.volume, prepared.volume * 0.8, atol=1e-5)
    assert kept.intensity_inset_mm == inset
    again = prepare_input(tiny_imaging_model, path, 40.0, "F", register=False, normalised_inset_mm=inset + 5).prepared
    plain = prepare_input(tiny_imaging_model, path, 40.0, "F", register=False).prepared
    np.testing.assert_array_equal(again.volume, plain.volume)
    assert np.abs(plain.volume - prepared.volume * 0.8).max() > 0.05
