"""Synthetic T1 MRI benchmark with voxel ground truth, on a :class:`ModelGrid` in MNI space.

Healthy subjects are the MNI152 2009c template (1 mm, skull-stripped) and its GM/WM probability maps, deformed and
aged per subject; lesions are real MS lesion masks in MNI space (when a folder of them is given) or synthetic blobs in
white matter, implanted as T1-hypointense regions. Volumes look like preprocessed scans: intensities in [0, 1]
(99.5th brain percentile = 1) and zero outside the brain mask.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy import ndimage as ndi

from normcore._utils.errors import InputError
from normcore.imaging.grid import FOV_CENTRE_MM, ModelGrid, template_image, template_on_grid, template_path

GM_FILE = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
WM_FILE = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
LESION_GLOB = "patient*_lesion_MNI.nii.gz"

AGE_MIN, AGE_MAX = 20.0, 85.0
# Generative constants (see SyntheticBrains' docstring).
VENTRICLE_MAX_MM = 3.0  # peak outward displacement of the ventricle walls at age 85
VENTRICLE_SIGMA_MM = 6.0  # smoothing of the ventricle mask whose gradient drives the expansion
THINNING_MM_PER_YEAR = 0.02  # cortical GM eroded from the pial side: 1.3 mm at 85
GM_CONTRAST_LOSS = 0.15  # fraction of the GM-to-WM intensity gap lost by age 85
SEX_SCALE = 0.015  # linear size: female x(1 - 0.015), male x(1 + 0.015), i.e. 3% apart
WARP_SD_MM = 1.25  # per-axis SD of the random displacement (|u|: ~2.1 mm RMS, 99th percentile ~4.5 mm)
WARP_SMOOTH_MM = 16.0  # Gaussian smoothing SD of the random displacement's white noise
BIAS_MAX = 0.10  # multiplicative bias field within +-10%
NOISE_SIGMA = 0.02  # Rician noise SD (WM ~ 0.95 before re-normalisation)
BRAIN_THRESHOLD = 0.1  # template intensity (99.5th percentile = 1) above which a voxel is brain


# ----------------------------------------------------------------------------------------------------------------
# Axis-aligned resampling (voxel-overlap averages or trilinear), separable along the three axes; smooth noise.


def _axis_weights(src_centres: np.ndarray, src_step: float, dst_centres: np.ndarray, dst_step: float) -> np.ndarray:
    """(n_dst, n_src) weights: the fraction of each destination voxel covered by each source voxel (1-D)."""
    s_lo = src_centres - abs(src_step) / 2
    s_hi = src_centres + abs(src_step) / 2
    d_lo = dst_centres[:, None] - dst_step / 2
    d_hi = dst_centres[:, None] + dst_step / 2
    overlap = np.clip(np.minimum(s_hi[None], d_hi) - np.maximum(s_lo[None], d_lo), 0, None)
    return (overlap / dst_step).astype(np.float32)


def _separable(arr: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    """Apply one (n_out, n_in) matrix along each of the three axes."""
    out = np.ascontiguousarray(arr, np.float32)
    for m in mats:  # contracting the leading axis and appending the new one keeps every step a plain matmul
        out = np.ascontiguousarray(np.tensordot(out, m, axes=([0], [1])))
    return out


def _linear_axis_weights(src_centres: np.ndarray, src_step: float, dst_centres: np.ndarray,
                         dst_step: float) -> np.ndarray:
    """(n_dst, n_src) 1-D linear interpolation weights (zero beyond the source's first/last voxel centres)."""
    n = src_centres.size
    u = (dst_centres - src_centres[0]) / src_step
    i0 = np.floor(u).astype(int)
    f = (u - i0).astype(np.float32)
    m = np.zeros((dst_centres.size, n), np.float32)
    rows = np.arange(dst_centres.size)
    for idx, w in ((i0, 1 - f), (i0 + 1, f)):
        ok = (idx >= 0) & (idx < n)
        m[rows[ok], idx[ok]] += w[ok]
    return m


def _resample(img: tuple[np.ndarray, np.ndarray], origin: np.ndarray, spacing: float, shape: tuple[int, ...],
              kind: str = "box") -> np.ndarray:
    """Resample ``(data, affine)`` to an axis-aligned RAS grid (``origin`` = first voxel centre in mm).

    ``kind="box"``: each output voxel is the average of the source over its cube (trilinear interpolation after a box
    anti-aliasing filter of the output voxel's size: partial volumes). ``kind="linear"``: plain trilinear
    interpolation at the output voxel centres. Separable along the axes; an oblique source affine falls back to
    nibabel's trilinear resampling.
    """
    data, aff = np.asarray(img[0], np.float32), np.asarray(img[1], float)
    lin = aff[:3, :3]
    if not np.allclose(lin, np.diag(np.diag(lin))):
        dst = np.diag([spacing] * 3 + [1.0])
        dst[:3, 3] = origin
        res = resample_from_to(nib.Nifti1Image(data, aff), (shape, dst), order=1)
        return np.asarray(res.dataobj, np.float32)
    weights = _axis_weights if kind == "box" else _linear_axis_weights
    mats = []
    for ax in range(3):
        step = float(lin[ax, ax])
        src = aff[ax, 3] + step * np.arange(data.shape[ax])
        dst = origin[ax] + spacing * np.arange(shape[ax])
        mats.append(weights(src, step, dst, spacing))
    return _separable(data, mats)


def _upsample_linear(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation of a coarse field spanning the same extent onto ``shape``."""
    mats = []
    for n_in, n_out in zip(coarse.shape, shape, strict=True):
        pos = np.linspace(0, n_in - 1, n_out)
        i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
        f = (pos - i0).astype(np.float32)
        m = np.zeros((n_out, n_in), np.float32)
        m[np.arange(n_out), i0] = 1 - f
        m[np.arange(n_out), i0 + 1] += f
        mats.append(m)
    return _separable(coarse, mats)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], extent_mm: np.ndarray, smooth_mm: float,
                  n: int = 1) -> np.ndarray:
    """``n`` smooth random fields (zero mean, unit SD) on ``shape``: white noise on a coarse grid (``smooth_mm / 3``
    spacing) Gaussian-filtered with SD ``smooth_mm``, then linearly interpolated."""
    step = smooth_mm / 3
    coarse_shape = tuple(int(np.ceil(e / step)) + 2 for e in extent_mm)
    out = np.empty((n, *shape), np.float32)
    for k in range(n):
        c = ndi.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), 3.0, mode="reflect")
        c = (c - c.mean()) / (c.std() + 1e-12)
        out[k] = _upsample_linear(c, shape)
    return out


def _block_mean(arr: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return arr
    s = arr.shape
    return arr.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(1, 3, 5))


# ----------------------------------------------------------------------------------------------------------------
# Template-space anatomy (1 mm) and its copy on a working grid.


@lru_cache(maxsize=1)
def _anatomy_1mm() -> dict:
    """Template T1 (99.5th percentile = 1), GM, WM, lateral ventricles and distance to exterior CSF, at 1 mm."""
    t1img = template_image()
    t1 = np.asarray(t1img.dataobj, np.float32)
    t1 = t1 / np.float32(np.percentile(t1[t1 > 0], 99.5))
    folder = template_path().parent
    maps = {}
    for name, file in (("gm", GM_FILE), ("wm", WM_FILE)):
        path = folder / file
        if not path.is_file():
            raise InputError(f"tissue map not found at {path} (a nilearn install without its data files?)")
        maps[name] = np.asarray(nib.load(str(path)).dataobj, np.float32) / 255.0
    brain = t1 > BRAIN_THRESHOLD
    gm, wm = maps["gm"] * brain, maps["wm"] * brain
    csf = np.clip(1 - gm - wm, 0, 1) * brain
    # MNI coordinates of each axis (the template affine is axis-aligned RAS).
    aff = t1img.affine
    ax = [aff[k, 3] + aff[k, k] * np.arange(t1.shape[k]) for k in range(3)]
    box = ((np.abs(ax[0]) < 35)[:, None, None] & ((ax[1] > -50) & (ax[1] < 35))[None, :, None]
           & ((ax[2] > -10) & (ax[2] < 40))[None, None, :])
    # Lateral ventricles: the two largest dark (CSF-intensity) components near the centre of the brain.
    dark = (t1 < 0.35) & brain & box
    lab, n = ndi.label(dark)
    sizes = ndi.sum(dark, lab, np.arange(1, n + 1))
    vent = np.isin(lab, 1 + np.argsort(sizes)[::-1][:2])
    # Exterior CSF: outside the brain plus sulcal CSF connected to it (the ventricular system is not). Computed in
    # the brain's bounding box plus a one-voxel margin of exterior (exact, and half the memory of the whole volume).
    crop = tuple(slice(max(sl.start - 1, 0), sl.stop + 1) for sl in ndi.find_objects(brain.astype(np.int8))[0])
    src = (csf[crop] > 0.5) | ~brain[crop]
    lab, _ = ndi.label(src)
    exterior = lab == lab[0, 0, 0]
    dist = np.zeros(t1.shape, np.float32)
    dist[crop] = ndi.distance_transform_edt(~exterior)
    return {"t1": t1, "gm": gm, "wm": wm, "vent": vent.astype(np.float32), "dist": dist, "affine": aff,
            "levels": {k: float(np.median(t1[m & brain])) for k, m in
                       (("gm", gm > 0.9), ("wm", wm > 0.9), ("csf", csf > 0.9))}}


@dataclass(frozen=True)
class _Atlas:
    grid: ModelGrid
    factor: int  # working grid = grid oversampled by this factor along each axis
    t1: np.ndarray
    gm: np.ndarray
    dist: np.ndarray
    vent_dir: np.ndarray  # (3, *wshape) ventricle-expansion sampling offset per mm of peak wall displacement (voxels)
    levels: dict

    @property
    def wspacing(self) -> float:
        return self.grid.spacing_mm / self.factor

    @property
    def wshape(self) -> tuple[int, int, int]:
        return tuple(s * self.factor for s in self.grid.shape)


def _working_origin(grid: ModelGrid, factor: int) -> np.ndarray:
    return grid.affine[:3, 3] - grid.spacing_mm / 2 + grid.spacing_mm / factor / 2


@lru_cache(maxsize=4)
def _atlas(grid: ModelGrid, factor: int) -> _Atlas:
    a = _anatomy_1mm()
    ws = grid.spacing_mm / factor
    shape = tuple(s * factor for s in grid.shape)
    origin = _working_origin(grid, factor)
    res = {k: _resample((a[k], a["affine"]), origin, ws, shape) for k in ("t1", "gm", "dist", "vent")}
    g = ndi.gaussian_filter(res["vent"], VENTRICLE_SIGMA_MM / ws)
    grad = np.stack(np.gradient(g))  # points into the ventricles; sampling there moves CSF outwards
    grad /= np.float32(np.sqrt((grad ** 2).sum(0)).max() + 1e-12)
    return _Atlas(grid, factor, res["t1"], res["gm"], res["dist"], (grad / ws).astype(np.float32), a["levels"])


@lru_cache(maxsize=4)
def _wm_cached(grid: ModelGrid) -> np.ndarray:
    a = _anatomy_1mm()
    wm = _resample((a["wm"], a["affine"]), grid.affine[:3, 3], grid.spacing_mm, grid.shape)
    out = (wm > 0.5) & template_on_grid(grid)[1]
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4)
def _ventricles_cached(grid: ModelGrid) -> np.ndarray:
    a = _anatomy_1mm()
    out = _resample((a["vent"], a["affine"]), grid.affine[:3, 3], grid.spacing_mm, grid.shape) > 0.25
    out.setflags(write=False)
    return out


def ventricles_on_grid(grid: ModelGrid) -> np.ndarray:
    """The template's lateral ventricles on ``grid``: voxels at least a quarter covered by them (bool)."""
    return _ventricles_cached(grid).copy()


def white_matter_on_grid(grid: ModelGrid) -> np.ndarray:
    """Template white matter on ``grid``: the MNI152 2009 WM probability (voxel average) > 0.5, inside the brain."""
    return _wm_cached(grid).copy()


# ----------------------------------------------------------------------------------------------------------------
# Healthy subjects.


def _sex_codes(sexes, n: int) -> np.ndarray:
    arr = np.asarray(sexes, dtype=object).ravel()
    if arr.size != n:
        raise InputError(f"got {n} ages but {arr.size} sexes")
    names = np.array([str(s).strip().lower() for s in arr], dtype=object)
    female = np.isin(names, ["0", "0.0", "f", "female"])
    male = np.isin(names, ["1", "1.0", "m", "male"])
    if not (female | male).all():
        raise InputError(f"sex must be 0/1 (0 = female) or F/M; got {arr[~(female | male)][0]!r}")
    return male.astype(np.int8)


def _age_fraction(age: float) -> float:
    return float(np.clip((age - AGE_MIN) / (AGE_MAX - AGE_MIN), 0.0, 1.0))


class SyntheticBrains:
    """Generator of healthy synthetic T1 volumes on a model grid, with known age and sex effects.

    Each subject is built at a working resolution of ``grid.spacing_mm / oversample`` (default: 2 mm for a 4 mm
    grid, 1 mm for a 2 mm grid) by sampling the 1 mm MNI152 2009c template T1 and its GM probability map through one
    per-subject deformation, then averaged down to the grid (partial volumes). Generative model:

    * **Deformation** (composed additively; all displacements are small and smooth):
      sex scaling about the field-of-view centre (female x0.985, male x1.015: 3% apart in linear size, ~9% in brain
      volume); a random displacement field (white noise Gaussian-filtered with SD 16 mm, per-axis SD
      1.25 mm, i.e. ~2.1 mm RMS magnitude, Jacobian determinant ~0.6-1.5); ventricle enlargement: the lateral
      ventricles (the two large dark CSF components near the template's centre, 9.2 ml) expand by a smooth local
      dilation, the displacement following the gradient of the Gaussian-smoothed (sigma 6 mm) ventricle mask and
      peaking at ``3 mm * f**1.5`` at the walls, ``f = (age - 20) / 65`` (accelerating with age; x1.7 at 85).
    * **Cortical thinning**: GM within ``t = 0.02 mm/yr * (age - 20)`` of exterior CSF (outside the brain or sulcal
      CSF connected to it; the ventricles and deep GM are spared) is converted to CSF, a soft erosion from the pial
      side, and the GM-to-WM intensity gap of the remaining GM shrinks by ``15% * f`` (lower GM/WM contrast).
      Intensity is the template's, plus these changes at the template's GM/WM/CSF intensity levels.
    * **Acquisition**: a smooth multiplicative bias field (within +-10%, random amplitude 5-10%), Rician noise
      (sigma 0.02 of a WM level ~0.95), then re-normalisation by the 99.5th percentile of brain voxels and clipping
      to [0, 1], as in preprocessing; zero outside the subject's brain mask (the warped template mask).

    Ageing is clamped to the modelled 20-85 range (younger = 20, older = 85); sexes are 0/1 (0 = female) or
    "F"/"M". Subject ``i`` of a call depends only on ``(generator seed, call seed, i, age, sex)``: reproducible, and
    independent of the rest of the batch.
    """

    def __init__(self, grid: ModelGrid, seed: int = 0, oversample: int | None = None):
        if oversample is None:
            oversample = 2 if grid.spacing_mm >= 2 else 1
        if int(oversample) < 1:
            raise InputError(f"oversample must be a positive integer, got {oversample}")
        self.grid = grid
        self.seed = int(seed)
        self.oversample = int(oversample)

    @property
    def atlas(self) -> _Atlas:
        return _atlas(self.grid, self.oversample)

    def healthy(self, ages, sexes, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Volumes ``(n, *grid.shape)`` float32 in [0, 1] and brain masks ``(n, *grid.shape)`` bool."""
        ages = np.atleast_1d(np.asarray(ages, float))
        if ages.ndim != 1 or not np.all(np.isfinite(ages)):
            raise InputError("ages must be a 1-D sequence of finite numbers (years)")
        codes = _sex_codes(sexes, ages.size)
        vols = np.empty((ages.size, *self.grid.shape), np.float32)
        masks = np.empty((ages.size, *self.grid.shape), bool)
        for i, (age, sex) in enumerate(zip(ages, codes, strict=True)):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(seed), i]))
            vols[i], masks[i] = self._subject(float(age), int(sex), rng)
        return vols, masks

    def _subject(self, age: float, sex: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        at = self.atlas
        ws, wshape, f = at.wspacing, at.wshape, _age_fraction(age)
        extent = np.asarray(wshape) * ws
        scale = 1 + SEX_SCALE * (1 if sex == 1 else -1)
        centre = (np.asarray(FOV_CENTRE_MM) - _working_origin(self.grid, self.oversample)) / ws
        disp = _smooth_field(rng, wshape, extent, WARP_SMOOTH_MM, 3) * np.float32(WARP_SD_MM / ws)
        disp += np.float32(VENTRICLE_MAX_MM * f ** 1.5) * at.vent_dir
        for k in range(3):
            idx = np.arange(wshape[k], dtype=np.float32)
            disp[k] += (centre[k] + (idx - centre[k]) / scale).reshape([-1 if j == k else 1 for j in range(3)])
        lv = at.levels
        t = THINNING_MM_PER_YEAR * (AGE_MAX - AGE_MIN) * f
        removed = at.gm * (np.clip(t + 1 - at.dist, 0, 1) - np.clip(1 - at.dist, 0, 1))
        aged = (at.t1 - removed * (lv["gm"] - lv["csf"])
                + GM_CONTRAST_LOSS * f * (at.gm - removed) * (lv["wm"] - lv["gm"]))
        img = ndi.map_coordinates(aged, disp, order=1, mode="constant", cval=0.0, prefilter=False)
        brain_w = img > BRAIN_THRESHOLD
        img = _block_mean(img * brain_w, self.oversample)
        mask = _block_mean(brain_w.astype(np.float32), self.oversample) >= 0.5
        bias = _smooth_field(rng, self.grid.shape, np.asarray(self.grid.shape) * self.grid.spacing_mm, 60.0)[0]
        bias = 1 + rng.uniform(BIAS_MAX / 2, BIAS_MAX) * bias / (np.abs(bias[mask]).max() + 1e-12)
        img = img * bias
        n1, n2 = rng.standard_normal((2, *img.shape), dtype=np.float32) * np.float32(NOISE_SIGMA)
        img = np.sqrt((img + n1) ** 2 + n2 ** 2)
        hi = np.percentile(img[mask], 99.5) if mask.any() else 1.0
        img = np.clip(img / hi, 0, 1) * mask
        return img.astype(np.float32), mask


# ----------------------------------------------------------------------------------------------------------------
# Lesions.


def lesion_volume_ml(mask: np.ndarray, grid: ModelGrid) -> float:
    """Volume of a binary mask on ``grid`` in millilitres."""
    return float(np.count_nonzero(mask)) * grid.spacing_mm ** 3 / 1000.0


def _lesion_files(lesion_dir: str | Path | None) -> list[Path]:
    if lesion_dir is None:
        return []
    return sorted(Path(lesion_dir).glob(LESION_GLOB))


def _mask_to_grid(frac: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Threshold an interpolated mask at 0.5, or at 0.25 within connected regions (of ``frac > 0``) it would lose."""
    keep = frac >= 0.5
    lab, n = ndi.label(frac > 0)
    if n:
        peak = ndi.maximum(frac, lab, np.arange(1, n + 1))
        small = np.flatnonzero(peak < 0.5) + 1
        keep |= np.isin(lab, small) & (frac >= 0.25)
    return keep & brain


@lru_cache(maxsize=8)
def _real_lesions(files: tuple[str, ...], grid: ModelGrid) -> tuple[tuple[np.ndarray, float], ...]:
    brain = template_on_grid(grid)[1]
    out = []
    for f in files:
        img = nib.load(f)
        data = np.asarray(img.dataobj, np.float32) > 0.5
        frac = _resample((data, img.affine), grid.affine[:3, 3], grid.spacing_mm, grid.shape, kind="linear")
        vox_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
        mask = _mask_to_grid(frac, brain)
        mask.setflags(write=False)
        out.append((mask, float(data.sum()) * vox_ml))
    return tuple(out)


def real_lesion_masks(grid: ModelGrid, lesion_dir: str | Path) -> list[tuple[str, np.ndarray, float]]:
    """Every real lesion mask in ``lesion_dir`` on ``grid``: (file name, mask, volume in ml at the native 1 mm)."""
    files = _lesion_files(lesion_dir)
    res = _real_lesions(tuple(str(f) for f in files), grid)
    return [(f.name, m.copy(), v) for f, (m, v) in zip(files, res, strict=True)]


def _synthetic_lesion(grid: ModelGrid, wm: np.ndarray, rng: np.random.Generator, lo_ml: float,
                      hi_ml: float) -> np.ndarray:
    vox_ml = grid.spacing_mm ** 3 / 1000.0
    k_lo, k_hi = int(np.ceil(lo_ml / vox_ml - 1e-9)), int(np.floor(hi_ml / vox_ml + 1e-9))
    k_total = int(np.clip(round(np.exp(rng.uniform(np.log(lo_ml), np.log(hi_ml))) / vox_ml), max(k_lo, 1), k_hi))
    n_blobs = int(min(rng.integers(1, 5), k_total))
    shares = rng.dirichlet(np.full(n_blobs, 2.0))
    counts = 1 + np.floor(shares * (k_total - n_blobs)).astype(int)  # every blob >= 1 voxel
    counts[np.argmax(shares)] += k_total - counts.sum()  # exact total: the floors' remainder goes to the largest
    interior = ndi.binary_erosion(wm)
    centres_from = np.argwhere(interior if interior.any() else wm)
    coords = np.indices(grid.shape, dtype=np.float32)
    rough = ndi.gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32), 1.5)
    rough /= rough.std() + 1e-12
    free = wm.copy()
    out = np.zeros(grid.shape, bool)
    for count in counts:
        if not free.any():
            break
        c = centres_from[rng.integers(len(centres_from))]
        rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        axes = np.array([1.0, rng.uniform(0.5, 1.0), rng.uniform(0.3, 1.0)], np.float32)
        rel = np.tensordot(rot.T.astype(np.float32), coords - c.reshape(3, 1, 1, 1).astype(np.float32), axes=1)
        d2 = ((rel / axes.reshape(3, 1, 1, 1)) ** 2).sum(0) * np.exp(0.4 * rough)
        d2 = np.where(free, d2, np.inf).ravel()
        take = np.argpartition(d2, min(count, d2.size - 1))[:count]
        take = take[np.isfinite(d2[take])]
        out.flat[take] = True
        free.flat[take] = False
    return out


def lesion_masks(grid: ModelGrid, n: int, seed: int, lesion_dir: str | Path | None = None,
                 min_ml: float = 0.0) -> list[np.ndarray]:
    """``n`` binary lesion masks on ``grid`` (inside the template brain).

    Real masks: when ``lesion_dir`` holds ``patientNN_lesion_MNI.nii.gz`` files (binary, MNI152 1 mm, any axis-aligned
    orientation), each is resampled to the grid by trilinear interpolation of the binary mask at the grid's voxel
    centres, thresholded at 0.5, or at 0.25 within a connected region of non-zero interpolated values that never
    reaches 0.5 (so a small lesion between grid points is not lost entirely). Sampling at voxel centres keeps the
    lesion volume on average (within ~10% for the masks > 2 ml at 4 mm); thresholding each grid voxel's coverage
    fraction at 0.5 instead would keep only 15-90% of these thin, periventricular MS lesions at 4 mm.
    Masks smaller than ``min_ml`` on the grid are skipped; the rest are used in a random order, cycling through all
    before repeating, each left-right flipped with probability 1/2 (augmentation; the grid is symmetric about x = 0).

    Synthetic masks (no ``lesion_dir`` or no such files in it): 1-4 blobs (ellipsoids of random orientation and axis
    ratios, roughened by a smooth noise field) centred in template white matter (WM probability > 0.5 on the grid,
    eroded by one voxel) and grown inside that WM, total volume log-uniform in ``[max(1, min_ml), 30]`` ml.
    """
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    files = _lesion_files(lesion_dir)
    if lesion_dir is not None and not files:
        warnings.warn(f"no {LESION_GLOB} files in {lesion_dir}: using synthetic lesions", stacklevel=2)
    if files:
        pool = [m for m, _ in _real_lesions(tuple(str(f) for f in files), grid) if lesion_volume_ml(m, grid) >= min_ml]
        if not pool:
            raise InputError(f"no lesion mask in {lesion_dir} reaches {min_ml} ml on the {grid.spacing_mm} mm grid")
        order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])[:n] if n else []
        flips = rng.random(n) < 0.5
        return [pool[j][::-1].copy() if flip else pool[j].copy() for j, flip in zip(order, flips, strict=True)]
    lo, hi = max(1.0, float(min_ml)), 30.0
    if lo > hi:
        raise InputError(f"min_ml={min_ml} exceeds the 30 ml maximum of synthetic lesions")
    wm = _wm_cached(grid)
    return [_synthetic_lesion(grid, wm, rng, lo, hi) for _ in range(n)]


def spherical_lesions(grid: ModelGrid, brains: np.ndarray, volume_ml: float, seed: int) -> list[np.ndarray]:
    """One ball of ``volume_ml`` per brain mask in ``brains`` (N, X, Y, Z), centred in template white matter.

    The centre is a random voxel of the template's white matter (WM probability > 0.5 on the grid) at least the
    ball's radius inside the subject's brain; the ball is the grid voxels whose centres lie within the radius
    ``(3 V / 4 pi)^(1/3)`` of it (so its volume on the grid is ``volume_ml`` up to the voxel discretisation),
    intersected with the brain. Raises when no white-matter voxel is that deep inside a brain.
    """
    rng = np.random.default_rng(seed)
    radius_vox = (3 * volume_ml * 1000.0 / (4 * np.pi)) ** (1 / 3) / grid.spacing_mm
    wm = _wm_cached(grid)
    coords = np.indices(grid.shape, dtype=np.float32)
    out = []
    for brain in np.asarray(brains, bool):
        depth = ndi.distance_transform_edt(brain)
        centres = np.argwhere(wm & (depth >= radius_vox))
        if not len(centres):
            raise InputError(f"no white-matter voxel lies {radius_vox * grid.spacing_mm:.0f} mm inside a brain mask")
        c = centres[rng.integers(len(centres))].reshape(3, 1, 1, 1)
        out.append((((coords - c) ** 2).sum(0) <= radius_vox ** 2) & brain)
    return out


def implant_lesion(volume: np.ndarray, lesion: np.ndarray, grid: ModelGrid, contrast: float = 0.5,
                   seed: int | None = None) -> np.ndarray:
    """A copy of ``volume`` with a T1-hypointense lesion: intensity pulled down towards ``contrast`` x WM level.

    The WM level is the 90th percentile of brain voxels (``volume > 0``; WM is the brightest third of the brain).
    The blending weight is the mask itself (1 inside) with a soft edge: a Gaussian-smoothed copy (sigma 0.7 voxel,
    truncated at one voxel) on the 26 neighbours just outside. The target gets 5% smooth multiplicative texture.
    Intensities only go down (a lesion voxel already darker than the target, e.g. CSF, is kept); voxels outside the
    brain and more than one voxel from the lesion are untouched.
    """
    volume = np.asarray(volume, np.float32)
    lesion = np.asarray(lesion, bool)
    if volume.shape != lesion.shape or volume.shape != tuple(grid.shape):
        raise InputError(f"volume {volume.shape}, lesion {lesion.shape} and grid {grid.shape} shapes differ")
    if not 0.0 <= contrast <= 1.0:
        raise InputError(f"contrast must be in [0, 1], got {contrast}")
    brain = volume > 0
    out = volume.copy()
    if not (lesion & brain).any():
        return out
    rng = np.random.default_rng(seed)
    weight = np.maximum(lesion, ndi.gaussian_filter(lesion.astype(np.float32), 0.7, truncate=1.5))  # radius 1
    texture = ndi.gaussian_filter(rng.standard_normal(volume.shape).astype(np.float32), 0.7)
    texture = 1 + 0.05 * texture / (texture.std() + 1e-12)
    target = contrast * np.percentile(volume[brain], 90) * texture
    new = np.where(volume > target, (1 - weight) * volume + weight * target, volume)
    out[brain] = new[brain]
    return out


def make_benchmark(grid: ModelGrid, n_healthy: int, n_lesion: int, seed: int,
                   lesion_dir: str | Path | None = None, min_ml: float = 0.0, contrast: float = 0.5) -> dict:
    """A cohort of healthy and lesioned synthetic subjects (healthy first), ages uniform 20-85, random sexes.

    Returns ``volumes`` (n, *shape) float32, ``masks`` (brain, bool), ``ages``, ``sexes`` (0/1), ``lesion_masks``
    (bool, all-false for healthy; lesion truth is kept inside each subject's brain mask), ``labels`` (0 healthy,
    1 lesion), ``lesion_ml`` and ``lesion_source`` ("real" or "synthetic").
    """
    n = int(n_healthy) + int(n_lesion)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    ages = rng.uniform(AGE_MIN, AGE_MAX, n)
    sexes = rng.integers(0, 2, n).astype(np.int8)
    volumes, masks = SyntheticBrains(grid, seed).healthy(ages, sexes, seed=seed)
    truth = np.zeros(volumes.shape, bool)
    les = lesion_masks(grid, int(n_lesion), seed, lesion_dir=lesion_dir, min_ml=min_ml)
    for j, m in enumerate(les):
        i = int(n_healthy) + j
        truth[i] = m & masks[i]
        volumes[i] = implant_lesion(volumes[i], truth[i], grid, contrast, seed=int(rng.integers(2 ** 31)))
    labels = np.r_[np.zeros(int(n_healthy), np.int8), np.ones(int(n_lesion), np.int8)]
    return {"volumes": volumes, "masks": masks, "ages": ages, "sexes": sexes, "lesion_masks": truth,
            "labels": labels, "lesion_ml": np.array([lesion_volume_ml(t, grid) for t in truth]),
            "lesion_source": "real" if _lesion_files(lesion_dir) else "synthetic"}
