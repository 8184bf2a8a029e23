"""Anomaly maps, z-maps and the abnormality index against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from normcore.imaging.anomaly import (
    TOPS,
    abnormality_index,
    anomaly_map,
    centile_among,
    healthy_error_stats,
    index_region,
    leave_one_out_index_table,
    leave_one_out_indices,
    scored_errors,
    voxel_zmap,
)


def test_anomaly_map_is_absolute_error_inside_the_brain_only():
    vol, rest = np.array([0.5, 0.2, 0.9]), np.array([0.1, 0.4, 0.0])
    brain = np.array([True, True, False])
    np.testing.assert_allclose(anomaly_map(vol, rest, brain), [0.4, 0.2, 0.0], atol=1e-7)


def test_index_is_the_mean_of_the_top_share():
    z = np.arange(200, dtype=float)
    brain = np.ones(200, bool)
    assert abnormality_index(z, brain, 0.01) == (199 + 198) / 2  # top 1% of 200 voxels = 2 voxels
    assert abnormality_index(z, brain, 0.05) == np.mean(np.arange(190, 200))
    brain[150:] = False  # voxels outside the brain never count
    assert abnormality_index(z, brain, 0.01) == (149 + 148) / 2


def test_index_region_leaves_out_the_edge_and_the_index_ignores_an_edge_artefact():
    brain = np.zeros((12, 12, 12), bool)
    brain[1:11, 1:11, 1:11] = True
    assert np.array_equal(index_region(brain, 0), brain)
    inner = index_region(brain, 2)
    assert inner.sum() == 6**3 and inner[3:9, 3:9, 3:9].all()  # two voxels of the edge left out on every side
    z = np.zeros(brain.shape)
    z[1, 1:11, 1:11] = 9.0  # a bright rim, as a mask one voxel too wide leaves it
    z[5, 5, 5] = 4.0
    assert abnormality_index(z, brain, 0.01) == 9.0
    assert abnormality_index(z, inner, 0.01) == 4.0 / 3  # top 1% of 216 voxels = 3 voxels: 4, 0, 0
    thin = np.zeros_like(brain)
    thin[5, 5, 2:9] = True
    assert np.array_equal(index_region(thin, 1), thin)  # nothing left after the margin: keep the scored voxels
    template = np.zeros_like(brain)
    template[:, :, :8] = True  # a leak or a misplaced vertex: z = 7 beyond the template's brain
    z[5, 5, 8] = 7.0
    assert abnormality_index(z, index_region(brain, 2), 0.01) == (7.0 + 4.0) / 3
    within = index_region(brain, 2, template)
    assert np.array_equal(within, inner & template) and abnormality_index(z, within, 0.01) == 4.0 / 2
    assert np.array_equal(index_region(brain, 2, ~brain), inner)  # nothing inside the template: keep the region


def test_a_lesion_the_size_of_the_peak_share_sets_the_peak_index_while_the_top_1_percent_dilutes_it():
    rng = np.random.default_rng(0)
    brain = np.ones((20, 25, 40), bool)  # 20000 voxels: the peak is the top 10, the top 1% the top 200
    z = rng.uniform(0, 2, brain.shape)  # healthy noise below 2
    assert abnormality_index(z, brain, TOPS["peak"]) == np.sort(z.ravel())[-10:].mean()
    z.ravel()[:10] = 6.0  # a focal lesion of 10 voxels at z = 6
    assert abnormality_index(z, brain, TOPS["peak"]) == 6.0
    assert abnormality_index(z, brain, TOPS["top1"]) < 0.05 * 6.0 + 0.95 * 2.0  # 10 of its 200 voxels
    assert TOPS["peak"] < TOPS["top1"] < TOPS["top5"]


def test_error_stats_and_zmap():
    errors = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    brains = np.ones_like(errors, bool)
    mean, std = healthy_error_stats(errors, brains, floor_fraction=0.25)
    np.testing.assert_allclose(mean, [3.0, 2.0])
    assert std[0] == 2.0 and std[1] == 0.25 * np.median([2.0, 0.0])  # constant voxel: floored, not zero
    z = voxel_zmap(np.array([7.0, 2.0]), mean, std, np.array([True, False]))
    np.testing.assert_allclose(z, [2.0, 0.0])


def test_leave_one_out_indices_do_not_use_the_subject_itself():
    rng = np.random.default_rng(0)
    errors = rng.random((6, 50))
    errors[0] += 3.0  # an outlier among the "healthy" subjects
    brains = np.ones_like(errors, bool)
    loo = leave_one_out_indices(errors, brains, 0.1)
    mean, std = healthy_error_stats(errors[1:], brains[1:])
    assert loo[0] == abnormality_index(voxel_zmap(errors[0], mean, std, brains[0]), brains[0], 0.1)
    assert loo[0] == loo.max()
    cube = rng.random((6, 8, 8, 8))
    cubes = np.ones_like(cube, bool)
    loo_inner = leave_one_out_indices(cube, cubes, 0.1, margin=1)
    mean, std = healthy_error_stats(cube[1:], cubes[1:])
    assert loo_inner[0] == abnormality_index(voxel_zmap(cube[0], mean, std, cubes[0]), index_region(cubes[0], 1), 0.1)
    table = leave_one_out_index_table(cube, cubes, {"a": 0.1, "b": 0.3}, margin=1)
    assert np.array_equal(table["a"], loo_inner)  # every share from the same leave-one-out z-maps
    assert np.array_equal(table["b"], leave_one_out_indices(cube, cubes, 0.3, margin=1))


def test_centile_among_reference():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    assert centile_among(10.0, ref) == 100.0
    assert centile_among(0.0, ref) == 0.0
    assert centile_among(2.0, ref) == 37.5
    assert np.isnan(centile_among(float("nan"), ref))


def test_scored_errors_take_out_a_scan_wide_misfit_and_the_brain_edge():
    rng = np.random.default_rng(0)
    brain = np.zeros((12, 12, 12), bool)
    brain[2:10, 2:10, 2:10] = True
    restoration = np.where(brain, 0.5, 0.0)
    noise = np.abs(rng.normal(0, 0.02, brain.shape))
    lesion = (slice(5, 7),) * 3
    healthy = restoration + noise
    healthy[lesion] += 0.3
    misfit = restoration + 3 * noise  # the same scan with a scan-wide larger misfit (e.g. intensity scaling)
    misfit[lesion] += 0.3
    raw, scored = scored_errors(healthy, restoration, brain)
    assert np.array_equal(scored, brain) and np.allclose(raw, anomaly_map(healthy, restoration, brain))
    a, inner = scored_errors(healthy, restoration, brain, "scan-median", edge_erosion=1)
    b, _ = scored_errors(misfit, restoration, brain, "scan-median", edge_erosion=1)
    assert np.median(a[inner]) == pytest.approx(1.0, rel=0.15)  # in units of the scan's own median error
    outside = brain & ~np.isin(np.arange(12), [5, 6])[:, None, None]
    assert np.median(b[outside & inner]) == pytest.approx(np.median(a[outside & inner]), rel=0.1)  # misfit gone
    assert a[lesion].min() > 5 * np.median(a[inner]) and b[lesion].min() > 2 * np.median(b[inner])
    assert inner.sum() == 6**3 and not inner[2].any() and (a[~inner] == 0).all()  # one voxel of edge left out
    thin = np.zeros_like(brain)
    thin[5, 5, 5] = True
    assert scored_errors(healthy, restoration, thin, edge_erosion=2)[1][5, 5, 5]  # nothing left: keep the brain


def test_error_power_two_thirds_makes_healthy_z_above_3_about_as_rare_as_a_gaussian_tail():
    """|e| of a Gaussian residual is skewed: z > 3 flags 0.9% of healthy voxels; |e|^(2/3) ~0.24% (a normal: 0.13%)."""
    rng = np.random.default_rng(0)
    restoration = np.full((8, 8, 8), 0.5, np.float32)
    brain = np.ones((8, 8, 8), bool)
    scans = restoration + 0.05 * rng.standard_normal((400, 8, 8, 8)).astype(np.float32)
    shares = {}
    for power in (1.0, 2 / 3):
        maps = np.stack([scored_errors(s, restoration, brain, error_power=power)[0] for s in scans])
        mean, std = healthy_error_stats(maps[:300], np.ones_like(maps[:300], bool))
        z = np.stack([voxel_zmap(m, mean, std, brain) for m in maps[300:]])
        shares[power] = (z > 3).mean()
    assert 0.006 < shares[1.0] < 0.013 and 0.001 < shares[2 / 3] < 0.004
    raw = scored_errors(scans[0], restoration, brain)[0]
    assert np.allclose(scored_errors(scans[0], restoration, brain, error_power=2 / 3)[0], raw ** (2 / 3))
