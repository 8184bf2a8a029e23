"""Synthetic MRI benchmark: volumes, age/sex effects, lesions (synthetic and real MS masks) and the cohort builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from normcore._utils.errors import InputError
from normcore.imaging.grid import CPU_GRID, template_on_grid
from normcore.imaging.synthetic import (
    SyntheticBrains,
    implant_lesion,
    lesion_masks,
    lesion_volume_ml,
    make_benchmark,
    real_lesion_masks,
    spherical_lesions,
    white_matter_on_grid,
)

GRID = CPU_GRID
LESION_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mri" / "lesion_masks_mni"
YOUNG, OLD = 25.0, 80.0


def _axes_mm(grid):
    aff = grid.affine
    return [aff[k, 3] + aff[k, k] * np.arange(grid.shape[k]) for k in range(3)]


def _central_box(grid) -> np.ndarray:
    x, y, z = _axes_mm(grid)
    return ((np.abs(x) < 30)[:, None, None] & ((y > -50) & (y < 30))[None, :, None]
            & ((z > -5) & (z < 30))[None, None, :])


@pytest.fixture(scope="module")
def cohort():
    """Three young and three old subjects of both sexes (one call)."""
    ages = np.array([YOUNG] * 3 + [OLD] * 3)
    sexes = [0, 1, 0, 1, 0, 1]
    vols, masks = SyntheticBrains(GRID, seed=0).healthy(ages, sexes, seed=5)
    return ages, np.array(sexes), vols, masks


def test_shapes_range_and_zero_outside_brain(cohort):
    _, _, vols, masks = cohort
    assert vols.shape == (6, *GRID.shape) and vols.dtype == np.float32
    assert masks.shape == (6, *GRID.shape) and masks.dtype == bool
    assert vols.min() >= 0.0 and vols.max() <= 1.0
    assert np.all(vols[~masks] == 0)
    assert np.all(vols[masks] > 0)
    template_brain = template_on_grid(GRID)[1].sum()
    for v, m in zip(vols, masks, strict=True):
        assert 0.85 < m.sum() / template_brain < 1.15
        assert np.percentile(v[m], 99.5) == pytest.approx(1.0, abs=0.02)  # re-normalised like preprocessing
        assert 0.5 < v[m].mean() < 0.85


def test_older_subjects_have_larger_ventricles_and_less_grey_matter(cohort):
    ages, _, vols, masks = cohort
    young, old = ages == YOUNG, ages == OLD
    dark = ((vols < 0.45) & masks & _central_box(GRID)).sum(axis=(1, 2, 3))  # ventricular CSF near the centre
    assert dark[old].mean() > 1.4 * dark[young].mean()
    grey = ((vols > 0.55) & (vols < 0.8) & masks).sum(axis=(1, 2, 3))  # voxels at GM intensity
    assert grey[old].mean() < 0.92 * grey[young].mean()


def test_males_are_larger(cohort):
    _, sexes, _, masks = cohort
    size = masks.sum(axis=(1, 2, 3))
    assert size[sexes == 1].min() > size[sexes == 0].max()


def test_seeds_reproducible_and_subjects_independent_of_the_batch(cohort):
    ages, sexes, vols, masks = cohort
    gen = SyntheticBrains(GRID, seed=0)
    v2, m2 = gen.healthy(ages[:2], ["F", "M"], seed=5)  # same subjects 0 and 1, sexes as letters
    np.testing.assert_array_equal(v2, vols[:2])
    np.testing.assert_array_equal(m2, masks[:2])
    other_call = gen.healthy(ages[:1], [0], seed=6)[0]
    other_gen = SyntheticBrains(GRID, seed=1).healthy(ages[:1], [0], seed=5)[0]
    assert not np.array_equal(other_call[0], vols[0])
    assert not np.array_equal(other_gen[0], vols[0])


def test_bad_inputs():
    gen = SyntheticBrains(GRID)
    with pytest.raises(InputError, match="sex"):
        gen.healthy([30.0], ["X"])
    with pytest.raises(InputError, match="sexes"):
        gen.healthy([30.0, 40.0], [0])
    with pytest.raises(InputError, match="finite"):
        gen.healthy([np.nan], [0])


def test_synthetic_lesions_volume_and_location():
    brain = template_on_grid(GRID)[1]
    masks = lesion_masks(GRID, 12, seed=1)
    assert len(masks) == 12
    vols = np.array([lesion_volume_ml(m, GRID) for m in masks])
    assert np.all(vols >= 1.0) and np.all(vols <= 30.0)
    assert vols.std() > 0  # drawn, not fixed
    for m in masks:
        assert m.shape == GRID.shape and m.dtype == bool
        assert not np.any(m & ~brain)
        n_blobs = ndi.label(m)[1]
        assert 1 <= n_blobs <= 8  # 1-4 blobs (a roughened blob may split in two)
    again = lesion_masks(GRID, 12, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(masks, again, strict=True))
    big = lesion_masks(GRID, 5, seed=2, min_ml=10)
    assert all(lesion_volume_ml(m, GRID) >= 10 for m in big)
    with pytest.raises(InputError):
        lesion_masks(GRID, 1, seed=0, min_ml=40)


def test_empty_lesion_dir_falls_back_to_synthetic(tmp_path):
    with pytest.warns(UserWarning, match="synthetic"):
        masks = lesion_masks(GRID, 2, seed=0, lesion_dir=tmp_path)
    assert len(masks) == 2 and all(lesion_volume_ml(m, GRID) >= 1 for m in masks)


def test_implant_lesion_darkens_inside_only(cohort):
    _, _, vols, masks = cohort
    vol, brain = vols[0], masks[0]
    lesion = lesion_masks(GRID, 1, seed=3)[0] & brain
    before = vol.copy()
    out = implant_lesion(vol, lesion, GRID, contrast=0.5, seed=0)
    np.testing.assert_array_equal(vol, before)  # input untouched, a new array returned
    assert out is not vol and out.dtype == np.float32
    assert np.all(out[lesion] <= vol[lesion])
    wm_level = np.percentile(vol[brain], 90)
    assert out[lesion].mean() < 0.75 * vol[lesion].mean()
    assert out[lesion].mean() == pytest.approx(0.5 * wm_level, rel=0.2)
    assert np.all(out[~brain] == 0)
    far = ~ndi.binary_dilation(lesion, structure=np.ones((3, 3, 3)))  # the soft edge reaches one voxel out
    np.testing.assert_array_equal(out[far], vol[far])
    np.testing.assert_array_equal(implant_lesion(vol, lesion, GRID, seed=0), implant_lesion(vol, lesion, GRID, seed=0))
    with pytest.raises(InputError):
        implant_lesion(vol, lesion, GRID, contrast=1.5)
    with pytest.raises(InputError):
        implant_lesion(vol[:-1], lesion[:-1], GRID)


def test_make_benchmark():
    b = make_benchmark(GRID, n_healthy=2, n_lesion=2, seed=4)
    n = 4
    assert b["volumes"].shape == (n, *GRID.shape) and b["masks"].shape == (n, *GRID.shape)
    assert b["lesion_masks"].shape == (n, *GRID.shape) and b["lesion_masks"].dtype == bool
    np.testing.assert_array_equal(b["labels"], [0, 0, 1, 1])
    assert np.all((b["ages"] >= 20) & (b["ages"] <= 85)) and set(np.unique(b["sexes"])) <= {0, 1}
    assert not b["lesion_masks"][:2].any()
    assert all(b["lesion_masks"][i].sum() > 0 for i in (2, 3))
    assert not np.any(b["lesion_masks"] & ~b["masks"])
    assert b["lesion_source"] == "synthetic"
    for i in (2, 3):
        les = b["lesion_masks"][i]
        assert b["volumes"][i][les].mean() < b["volumes"][i][b["masks"][i] & ~les].mean()
        assert b["lesion_ml"][i] == pytest.approx(lesion_volume_ml(les, GRID))


def test_real_lesion_masks_on_the_grid():
    if not sorted(LESION_DIR.glob("patient*_lesion_MNI.nii.gz")):
        pytest.skip(f"real MS lesion masks not available: {LESION_DIR} is absent or empty (it lives in ../shared/data)")
    brain = template_on_grid(GRID)[1]
    wm = ndi.binary_dilation(white_matter_on_grid(GRID))
    real = real_lesion_masks(GRID, LESION_DIR)
    assert len(real) >= 5
    for name, mask, ml_1mm in real:
        assert not np.any(mask & ~brain), name
        if ml_1mm > 2:
            assert lesion_volume_ml(mask, GRID) == pytest.approx(ml_1mm, rel=0.3), name
            assert (mask & wm).sum() > 0.7 * mask.sum(), name  # MS lesions sit in (periventricular) white matter
    pool = [m for _, m, _ in real]
    drawn = lesion_masks(GRID, len(pool) + 3, seed=0, lesion_dir=LESION_DIR)
    for m in drawn:  # each draw is one of the real masks, possibly left-right flipped
        assert any(np.array_equal(m, p) or np.array_equal(m, p[::-1]) for p in pool)
    big = lesion_masks(GRID, 4, seed=0, lesion_dir=LESION_DIR, min_ml=5)
    assert all(lesion_volume_ml(m, GRID) >= 5 for m in big)
    b = make_benchmark(GRID, 0, 1, seed=0, lesion_dir=LESION_DIR)
    assert b["lesion_source"] == "real"



def test_spherical_lesions_have_the_volume_asked_for_inside_the_brain():
    grid = GRID
    _, brain = template_on_grid(grid)
    masks = spherical_lesions(grid, np.stack([brain, brain]), 5.0, seed=0)
    wm = white_matter_on_grid(grid)
    for m in masks:
        assert 4.0 <= lesion_volume_ml(m, grid) <= 6.0  # 78 voxels of 64 ul, up to the discretisation
        assert not (m & ~brain).any()
        centre = np.round(np.argwhere(m).mean(0)).astype(int)
        assert wm[tuple(centre)] and ndi.label(m)[1] == 1  # one compact ball centred in white matter
    assert not np.array_equal(masks[0], masks[1])
    with pytest.raises(InputError, match="inside a brain mask"):
        spherical_lesions(grid, np.zeros((1, *grid.shape), bool), 5.0, seed=0)
