"""Model grids in MNI152 space and the MNI152 2009 template shipped in nilearn's wheel."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from normcore._utils.errors import InputError

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
# Centre of the model field of view in MNI mm (the brain's bounding box centre, roughly).
FOV_CENTRE_MM = (0.0, -18.0, 10.0)


@dataclass(frozen=True)
class ModelGrid:
    """A RAS voxel grid in MNI space: isotropic ``spacing_mm`` and ``shape``, centred on the brain."""

    spacing_mm: float
    shape: tuple[int, int, int]

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([self.spacing_mm] * 3 + [1.0])
        half = (np.asarray(self.shape, float) - 1) / 2 * self.spacing_mm
        aff[:3, 3] = np.asarray(FOV_CENTRE_MM) - half
        return aff

    def to_dict(self) -> dict:
        return {"spacing_mm": self.spacing_mm, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelGrid:
        return cls(float(d["spacing_mm"]), tuple(int(s) for s in d["shape"]))

    def empty_image(self, data: np.ndarray | None = None) -> nib.Nifti1Image:
        arr = np.zeros(self.shape, np.float32) if data is None else np.asarray(data, np.float32)
        return nib.Nifti1Image(arr, self.affine)


# 4 mm: 160 x 192 x 160 mm field of view (the whole MNI brain); 2 mm: the same field at twice the resolution.
CPU_GRID = ModelGrid(4.0, (40, 48, 40))
GPU_GRID = ModelGrid(2.0, (80, 96, 80))


def template_path() -> Path:
    """Path of the MNI152 2009c T1 template (1 mm, skull-stripped) inside the installed nilearn package."""
    spec = importlib.util.find_spec("nilearn")  # located, not imported (importing nilearn is slow)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("nilearn is not installed: it ships the MNI152 template (pip install -r requirements.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE_FILE
    if not path.is_file():
        raise InputError(f"MNI152 template not found at {path} (a nilearn install without its data files?)")
    return path


@lru_cache(maxsize=1)
def template_image() -> nib.Nifti1Image:
    """The 1 mm MNI152 T1 template as float32 (cached)."""
    img = nib.load(str(template_path()))
    return nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine)


@lru_cache(maxsize=8)
def template_on_grid(grid: ModelGrid) -> tuple[np.ndarray, np.ndarray]:
    """Template intensities scaled to [0, 1] and its brain mask, resampled to ``grid``."""
    res = resample_from_to(template_image(), (grid.shape, grid.affine), order=1)
    data = np.asarray(res.dataobj, np.float32)
    hi = float(np.percentile(data[data > 0], 99.5)) if np.any(data > 0) else 1.0
    mask = data > 0.1 * hi
    return np.clip(data / hi, 0, 1).astype(np.float32), mask
