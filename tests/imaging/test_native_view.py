"""A scored scan at its own resolution: RAS reorientation without resampling, voxel aspect, the most anomalous
region (a cluster, not one extreme voxel)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from normcore.imaging.native_view import Z_THRESHOLD, most_anomalous_voxel, native_view
from tests.reports.test_mri import CLUSTER, SHAPE, ZOOMS, _scan_and_zmap


def test_an_lps_scan_becomes_its_ras_copy_without_resampling():
    ras = native_view(*_scan_and_zmap(False)[:2])
    lps = native_view(*_scan_and_zmap(True)[:2])
    assert ras.shape == lps.shape == SHAPE
    np.testing.assert_array_equal(ras.z, lps.z)
    np.testing.assert_allclose(ras.affine, lps.affine)
    assert np.allclose(ras.zooms, ZOOMS) and ras.aspect("coronal") == pytest.approx(2.0)
    assert ras.aspect("axial") == pytest.approx(1.0)


def test_the_most_anomalous_voxel_is_the_cluster_and_the_brain_defaults_to_nonzero_z():
    view = native_view(*_scan_and_zmap()[:2])
    voxel = most_anomalous_voxel(view)
    assert np.abs(np.array(voxel) - CLUSTER).max() <= 2 and view.most_anomalous == voxel
    assert view.brain.sum() == (view.z != 0).sum()
    assert view.z[voxel] >= Z_THRESHOLD


def test_a_given_brain_mask_is_reoriented_with_the_scan():
    scan, zmap, brain = _scan_and_zmap(True)
    view = native_view(scan, zmap, brain=brain)
    np.testing.assert_array_equal(view.brain, native_view(*_scan_and_zmap(False)[:2], brain=_scan_and_zmap()[2]).brain)


def test_a_quiet_zmap_opens_on_its_largest_smoothed_z():
    scan, zmap, _ = _scan_and_zmap()
    z = np.asarray(zmap.dataobj).copy()
    z[z > 2.5] = 0.5  # nothing above the threshold
    view = native_view(scan, nib.Nifti1Image(z, zmap.affine))
    voxel = most_anomalous_voxel(view)
    assert view.brain[voxel]
