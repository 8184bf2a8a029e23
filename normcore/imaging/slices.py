"""Slicing RAS volumes for display: which voxel axis a view cuts and how a plane is oriented.

Volumes have RAS voxel axes: axis 0 = x (left -> right), axis 1 = y (posterior -> anterior), axis 2 = z
(inferior -> superior). Slices are returned in image order (row 0 at the top) in the neurological convention
(the subject's left on the left of the image): axial slices show x across and y up (anterior at the top),
coronal slices x across and z up, sagittal slices y across (anterior on the right) and z up.
"""

from __future__ import annotations

import numpy as np

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def axis_index(axis: str | int) -> int:
    """The voxel axis sliced by ``axis`` ("sagittal" 0, "coronal" 1, "axial" 2, or the number itself)."""
    if isinstance(axis, str):
        if axis.lower() not in AXES:
            raise ValueError(f"unknown slice axis {axis!r}; use one of {list(AXES)}")
        return AXES[axis.lower()]
    if int(axis) not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, not {axis!r}")
    return int(axis)


def axis_name(axis: str | int) -> str:
    return {v: k for k, v in AXES.items()}[axis_index(axis)]


def slice_of(volume: np.ndarray, axis: str | int, index: int) -> np.ndarray:
    """A 2D slice of a RAS volume oriented for display (row 0 at the top; see the module docstring)."""
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"a 3D volume is expected, got shape {vol.shape}")
    ax = axis_index(axis)
    if not 0 <= int(index) < vol.shape[ax]:
        raise IndexError(f"slice {index} outside 0-{vol.shape[ax] - 1} along the {axis_name(ax)} axis")
    plane = np.take(vol, int(index), axis=ax)  # the two remaining axes in order: (x, y), (x, z) or (y, z)
    return plane.T[::-1]  # rows = the second remaining axis, highest (anterior/superior) at the top
