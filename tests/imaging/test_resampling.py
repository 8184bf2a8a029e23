"""The per-scan resampling band: reslicing moves voxels, not the scan's place in the world; the band covers the scan
as prepared and its resliced versions; scans that cannot be resliced say why."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest

from normcore._utils.errors import InputError
from normcore.imaging import resampling
from normcore.imaging.pipeline import prepare_input, score_scan
from normcore.imaging.resampling import (
    ResamplingBand,
    check_resamplings,
    resampling_band,
    reslice,
    unavailable_reason,
)


def fine_scan(tiny_cohort, i: int) -> nib.Nifti1Image:
    """Tiny cohort scan ``i`` (in MNI space) upsampled to 5 mm voxels."""
    grid = tiny_cohort["grid"]
    vol = np.kron(tiny_cohort["volumes"][i], np.ones((2, 2, 2))).astype(np.float32) * 1000
    affine = grid.affine.copy()
    affine[:3, :3] /= 2
    affine[:3, 3] -= np.diag(affine[:3, :3]) / 2  # the 8 fine voxels of a coarse one share its centre
    return nib.Nifti1Image(vol, affine)


def test_reslice_moves_the_voxels_not_the_world():
    rng = np.random.default_rng(0)
    data = rng.random((6, 7, 8)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    mask = np.zeros(data.shape, bool)
    mask[2:4, 2:5, 3:6] = True
    whole, whole_mask = reslice(img, mask, [1, 0, 0])
    np.testing.assert_allclose(np.asarray(whole.dataobj)[1:], data[:-1])
    np.testing.assert_array_equal(whole_mask[1:], mask[:-1])
    # new voxel (i + 1, j, k) lies where old voxel (i, j, k) did: the scan stays put in the scanner
    np.testing.assert_allclose(whole.affine @ [1, 0, 0, 1], img.affine @ [0, 0, 0, 1])
    half, _ = reslice(img, None, 0.5, order=1)  # trilinear, half a voxel along each axis: the mean of 8 neighbours
    expected = np.mean([data[a:a + 5, b:b + 6, c:c + 7] for a in (0, 1) for b in (0, 1) for c in (0, 1)], axis=0)
    np.testing.assert_allclose(np.asarray(half.dataobj)[1:, 1:, 1:], expected, atol=1e-6)


def test_the_default_reslice_samples_again_without_smoothing_and_adds_no_new_intensities():
    data = np.random.default_rng(1).random((16, 16, 16)).astype(np.float32)  # white noise: all fine detail
    img = nib.Nifti1Image(data, np.eye(4))
    inner = (slice(3, -3),) * 3
    cubic = np.asarray(reslice(img, None, 0.25)[0].dataobj)
    trilinear = np.asarray(reslice(img, None, 0.25, order=1)[0].dataobj)
    # a quarter-voxel trilinear reslice keeps (0.75^2 + 0.25^2)^3 = 24% of white noise's variance; cubic far more
    assert trilinear[inner].var() < 0.3 * data.var() < 0.6 * data.var() < cubic[inner].var()
    assert data.min() <= cubic.min() and cubic.max() <= data.max()


def test_check_resamplings_and_the_band_in_words():
    assert check_resamplings(0) == 0 and check_resamplings(np.int64(4)) == 4
    for bad in (-1, 2.0, True, resampling.MAX_RESAMPLINGS + 1):
        with pytest.raises(InputError, match="resamplings"):
            check_resamplings(bad)
    band = ResamplingBand("peak", [60.3, 44.8, 81.9], [[0.1, 0.2, -0.3], [0.0, -0.4, 0.2]])
    assert (band.low, band.high, band.n_resamplings) == (44.8, 81.9, 2)
    assert band.text() == "resliced 2 times by a fraction of a voxel, the centile ranged 45-82"
    assert band.to_dict()["centiles"] == [60.3, 44.8, 81.9] and band.to_dict()["index"] == "peak"


def test_scans_that_cannot_be_resliced_say_why(tiny_imaging_model, tiny_cohort, tmp_path):
    grid = tiny_cohort["grid"]
    coarse = tmp_path / "coarse.nii.gz"
    nib.save(nib.Nifti1Image(tiny_cohort["volumes"][12] * 1000, grid.affine), coarse)
    prepared = prepare_input(tiny_imaging_model, coarse, 40.0, "F", register=False).prepared
    assert "not finer than the model grid" in unavailable_reason(prepared, prenormalised=False)
    assert "already normalised" in unavailable_reason(prepared, prenormalised=True)
    result = score_scan(tiny_imaging_model, coarse, 40.0, "F", register=False, resamplings=2)
    assert result.band is None and result.summary()["healthy_centile_band"] is None
    assert any(w.startswith("no resampling band: its voxels (10 mm)") for w in result.warnings)
    plain = score_scan(tiny_imaging_model, coarse, 40.0, "F", register=False)
    assert plain.band is None and not any("resampling band" in w for w in plain.warnings)  # not asked: not said


def test_band_covers_the_scan_and_its_resliced_versions(tiny_imaging_model, tiny_cohort, tmp_path, monkeypatch):
    path = tmp_path / "fine.nii.gz"
    nib.save(fine_scan(tiny_cohort, 12), path)
    calls = []
    real = resampling.prepare_scan
    monkeypatch.setattr(resampling, "prepare_scan", lambda img, grid, **kw: calls.append(kw) or real(img, grid, **kw))
    result = score_scan(tiny_imaging_model, path, 40.0, "F", register=False, resamplings=3)
    band = result.band
    assert band.n_resamplings == 3 and len(band.shifts_vox) == 3
    assert band.centiles[0] == result.score.centile[result.score.headline]  # the scan as prepared comes first
    assert band.low <= band.centiles[0] <= band.high and all(0 <= c <= 100 for c in band.centiles)
    assert np.all(np.abs(band.shifts_vox) <= 0.5)
    # each version is prepared again from the scan's own voxels, as the scan was (no registration asked: none)
    assert len(calls) == 3 and all(kw["register"] is False and kw["mask"] is not None for kw in calls)
    summary = result.summary()["healthy_centile_band"]
    assert summary["n_resamplings"] == 3 and summary["low"] == band.low
    again = resampling_band(tiny_imaging_model, result.prepared, result.score, 40.0, "F", 3, register=False)
    assert again.centiles == band.centiles  # the offsets come from the seed
    # a whole head (mask from the template) gets its mask made again for every version
    head = dataclasses.replace(result.prepared, facts={**result.prepared.facts, "mask_source": "template"})
    calls.clear()
    resampling_band(tiny_imaging_model, head, result.score, 40.0, "F", 1, register=False)
    assert calls[0]["mask"] is None
