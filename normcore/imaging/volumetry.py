"""Coarse volumes on the model grid: lateral-ventricle CSF and brain tissue, in millilitres.

Both are partial-volume estimates from intensity alone (preprocessed scans: the brain's 99.5th percentile is 1,
CSF is dark): a voxel's CSF fraction rises linearly from 0 at ``TISSUE_LEVEL`` to 1 at ``CSF_LEVEL``. The
ventricle volume is the CSF in a fixed region, the template's lateral ventricles dilated by ``VENTRICLE_MARGIN_MM``
(room for enlargement with age); the tissue volume is the non-CSF part of the brain mask. They measure change
between images of one brain on one grid (counterfactuals, ageing trends), not absolute anatomy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from normcore.imaging.grid import ModelGrid
from normcore.imaging.synthetic import ventricles_on_grid

CSF_LEVEL = 0.2
TISSUE_LEVEL = 0.55
VENTRICLE_MARGIN_MM = 8.0


def csf_fraction(volume: np.ndarray) -> np.ndarray:
    """Per-voxel CSF fraction in [0, 1] of a preprocessed volume."""
    return np.clip((TISSUE_LEVEL - np.asarray(volume, np.float32)) / (TISSUE_LEVEL - CSF_LEVEL), 0.0, 1.0)


@lru_cache(maxsize=4)
def _region_cached(grid: ModelGrid) -> np.ndarray:
    steps = max(1, int(round(VENTRICLE_MARGIN_MM / grid.spacing_mm)))
    out = ndi.binary_dilation(ventricles_on_grid(grid), iterations=steps)
    out.setflags(write=False)
    return out


def ventricle_region(grid: ModelGrid) -> np.ndarray:
    """The template's lateral ventricles on ``grid``, dilated by ``VENTRICLE_MARGIN_MM`` (bool; made once per grid)."""
    return _region_cached(grid).copy()


def ventricle_volume_ml(volumes: np.ndarray, grid: ModelGrid, brains: np.ndarray | None = None) -> np.ndarray:
    """CSF volume (ml) inside the ventricle region of each volume (N, X, Y, Z) or of one volume (a float array)."""
    vols = np.asarray(volumes, np.float32)
    region = ventricle_region(grid)
    if brains is not None:
        region = region & np.asarray(brains, bool)
    frac = csf_fraction(vols) * region
    return frac.sum(axis=(-3, -2, -1)) * grid.spacing_mm ** 3 / 1000.0


def tissue_volume_ml(volumes: np.ndarray, brains: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """Brain tissue volume (ml): the non-CSF part of each brain mask."""
    frac = (1.0 - csf_fraction(volumes)) * np.asarray(brains, bool)
    return frac.sum(axis=(-3, -2, -1)) * grid.spacing_mm ** 3 / 1000.0
