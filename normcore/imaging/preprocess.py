"""Preprocessing of a T1 scan onto a model grid in MNI space (and back): brain mask, intensity scale, affine.

Registration is affine (12 degrees of freedom, mutual information, multi-resolution) with SimpleITK: the
diffusion model learns the anatomical variation left after an affine alignment (why SimpleITK and not ANTsPy:
README).

World coordinates: nibabel works in RAS mm, SimpleITK/ITK in LPS mm; matrices cross over with diag(-1, -1, 1, 1)
on both sides. ``PreparedScan.matrix`` maps MNI world mm (RAS) to native world mm (RAS): it pulls native
intensities onto the grid, and its inverse pulls grid values back into the native scan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore.imaging.acquisition import scan_facts
from normcore.imaging.grid import ModelGrid, template_image, template_on_grid
from normcore.imaging.io import float_image

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
WORK_MM = 3.0  # resolution of the fixed (template) image used for registration
MOVING_MM = 2.0  # finer moving images are anti-aliased and resliced to this before registration
SEED = 20240607
# Skull-stripped rule: this share of voxels at exactly the minimum, around a brain-sized foreground (mL).
STRIPPED_BACKGROUND_SHARE = 0.4
STRIPPED_FOREGROUND_ML = (300.0, 3000.0)
# Pseudo-head around the template brain for registering whole-head scans: skull+CSF dark, scalp bright.
SCALP_SHELL_MM = (7.0, 14.0)
SCALP_LEVEL = 0.6
HEAD_SLAB_MM = 100.0  # whole heads are first aligned on the centroid of this top slab (necks and FOVs vary)
POOR_DICE = 0.7  # below this brain/template Dice the scan gets a "registration may have failed" warning
MIN_STEP = 1e-3  # optimiser stops once its (scaled, ~mm) step is this small
# Intensity anchors taken inside the brain (normalise_intensity): the deep lower anchor's level, the volumetry's CSF
# level (normcore.imaging.volumetry.CSF_LEVEL), and the least share of the brain it is taken over.
DEEP_ANCHOR_LEVEL = 0.2
MIN_DEEP_SHARE = 0.2
# Brain of a whole-head scan (head_brain): the registered template brain, grown by up to HEAD_BAND_MM into voxels
# brighter than HEAD_LEVEL (half the deep anchor's CSF level: CSF stays in, bone and air drop out), opened by
# HEAD_OPEN_MM, and kept whole below HEAD_CORE_MM inside the template brain's edge.
HEAD_BAND_MM = 4.0
HEAD_LEVEL = 0.1
HEAD_OPEN_MM = 2.0
HEAD_CORE_MM = 15.0
HEAD_INSET_MM = 10.0  # the inset of the intensity scale head_brain thresholds on, whatever the model's own
NOT_STRIPPED_WARNING = ("no brain mask given and the scan is not skull-stripped: brain taken from the registered "
                        "MNI template brain refined by intensity; results outside the brain are not meaningful")


@dataclass(frozen=True)
class Stage:
    """One registration stage: pyramid (shrink factors, smoothing sigmas in mm) and optimiser settings."""

    shrink: tuple[int, ...]
    sigmas_mm: tuple[float, ...]
    iterations: int
    sampling: float
    learning_rate: float


SIMILARITY = Stage((4, 2), (4.0, 2.0), 100, 0.2, 1.0)
AFFINE = Stage((2, 1), (2.0, 0.0), 50, 0.1, 0.5)
# Starting rotations tried before the similarity stage (about the initial centre, at the similarity stage's coarsest
# level): a head pitched (nodding) by up to 30 degrees and turned or rolled by up to 15 degrees, as clinical scans
# not aligned with the AC-PC line often come. From the identity alone the optimiser lost 7 of 20 masked IXI heads
# pitched 20 degrees beyond their own pitch and 16 of 20 at 25 (more than 5 mm off; BENCHMARKS.md). The best of them
# at the coarsest level, when not the identity, is a second start for the similarity stage beside the identity, and
# the stage's better end is kept.
START_STEP_DEG = 10.0
START_STEPS = (3, 1, 1)  # grid steps each side about x (pitch), y (roll), z (turn), in units of START_STEP_DEG ...
START_SCALES = (1.0, 1.5, 1.5)  # ... times these: pitch -30..30 by 10, roll and turn -15, 0, 15


@dataclass
class PreparedScan:
    """A scan on the model grid plus what is needed to map results back to its native space."""

    volume: np.ndarray  # grid.shape float32 in [0, 1], zero outside ``brain``
    brain: np.ndarray  # bool on the grid
    grid: ModelGrid
    native: nib.Nifti1Image  # the input scan as given (original orientation)
    native_brain: np.ndarray  # bool in the native voxel array
    matrix: np.ndarray  # 4x4: MNI world mm (RAS) -> native world mm (RAS)
    warnings: list[str] = field(default_factory=list)
    registration_metric: float | None = None  # final Mattes MI (SimpleITK sign: lower is better); None if not run
    template_dice: float | None = None  # overlap of ``brain`` with the template brain mask on the grid
    facts: dict = field(default_factory=dict)  # voxel size, brain coverage, overlap (normcore.imaging.acquisition)
    intensity_inset_mm: float = 0.0  # the normalisation's setting (normalise_intensity) ``volume`` was made with


# ----------------------------------------------------------------------------------------------------------------
# Small array helpers


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) along the three array axes of ``affine``."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def pull(source: np.ndarray, source_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray,
         world: np.ndarray | None = None, order: int = 1) -> np.ndarray:
    """Sample ``source`` on the voxel grid (``shape``, ``affine``); ``world`` maps that grid's world mm to source's."""
    world = np.eye(4) if world is None else world
    vox = np.linalg.inv(source_affine) @ world @ affine
    return ndimage.affine_transform(np.asarray(source, np.float32), vox[:3, :3], vox[:3, 3], output_shape=tuple(shape),
                                    order=order, mode="constant", cval=0.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def looks_skull_stripped(data: np.ndarray, zooms: tuple[float, ...] | np.ndarray) -> bool:
    """True when >= 40% of voxels sit at exactly the minimum and the rest is brain-sized (300-3000 mL).

    Whole-head scans have a noisy background (few exact minima) or, when zero-filled, a head-sized foreground.
    """
    background = data == data.min()
    share = float(background.mean())
    foreground_ml = float((~background).sum()) * float(np.prod(zooms)) / 1000.0
    lo, hi = STRIPPED_FOREGROUND_ML
    return share >= STRIPPED_BACKGROUND_SHARE and lo <= foreground_ml <= hi


def normalise_intensity(data: np.ndarray, brain: np.ndarray, inset_mm: float = 0.0,
                        zooms: tuple[float, ...] | np.ndarray = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Map intensities linearly to [0, 1] (clipped; float32, whole array) on two anchors taken over ``brain``.

    ``inset_mm`` 0 (models fitted before the setting): (data - p0.5) / (p99.5 - p0.5) over ``brain``. The lower anchor
    then comes from the mask's darkest voxels, its edge, so a mask one voxel off moves it (BENCHMARKS.md).
    ``inset_mm`` > 0: the upper anchor is still p99.5 over ``brain``; the lower one is p0.5 over the voxels at least
    ``inset_mm`` inside the mask's edge (``zooms``: voxel size in mm), mostly ventricular CSF, and it maps to
    ``DEEP_ANCHOR_LEVEL``, leaving room below it for the darker CSF and partial volume at the edge. When fewer than
    ``MIN_DEEP_SHARE`` of the brain lies that deep (a small or thin mask), the deepest such share is used instead.
    """
    values = data[brain]
    if values.size == 0:
        raise InputError("brain mask is empty: no voxels to normalise intensities on")
    hi = float(np.percentile(values, 99.5))
    if inset_mm > 0:
        depth = ndimage.distance_transform_edt(np.pad(brain, 1), sampling=np.asarray(zooms, float)[:3])
        inside = depth[1:-1, 1:-1, 1:-1][brain]
        deep = values[inside >= min(inset_mm, float(np.quantile(inside, 1.0 - MIN_DEEP_SHARE)))]
        deep_lo = float(np.percentile(deep, 0.5))
        lo = (deep_lo - DEEP_ANCHOR_LEVEL * hi) / (1.0 - DEEP_ANCHOR_LEVEL)
    else:
        lo = float(np.percentile(values, 0.5))
    if hi <= lo:
        raise InputError(f"brain intensities are constant ({hi:g}): cannot normalise the scan")
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def smooth_in_mask(data: np.ndarray, mask: np.ndarray, sigma_vox: np.ndarray) -> np.ndarray:
    """Gaussian smoothing restricted to ``mask`` (normalised convolution), zero outside it."""
    if np.all(sigma_vox < 0.25):
        return np.where(mask, data, 0).astype(np.float32)
    m = mask.astype(np.float32)
    num = ndimage.gaussian_filter(np.where(mask, data, 0).astype(np.float32), sigma_vox)
    den = ndimage.gaussian_filter(m, sigma_vox)
    return np.where(mask, num / np.maximum(den, 1e-6), 0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Registration


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK float image of ``data`` (nibabel i,j,k order) placed by a RAS ``affine`` (converted to LPS)."""
    zooms = voxel_sizes(affine)
    lps = LPS @ affine
    direction = lps[:3, :3] / zooms
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError("to_sitk needs an affine without shear (use registration_copy first)")
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(z) for z in zooms])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in direction.ravel()])
    return img


def has_shear(affine: np.ndarray) -> bool:
    """True when the voxel axes of ``affine`` are not orthogonal (SimpleITK images cannot carry shear)."""
    rot = affine[:3, :3] / voxel_sizes(affine)
    return not np.allclose(rot.T @ rot, np.eye(3), atol=1e-4)


def axis_aligned(data: np.ndarray, affine: np.ndarray, step: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``data`` resliced (trilinear) on an axis-aligned RAS grid of ``step`` mm (default: finest voxel) covering it."""
    step = float(voxel_sizes(affine).min()) if step is None else float(step)
    corners = np.array([[i, j, k, 1.0] for i in (0, data.shape[0] - 1) for j in (0, data.shape[1] - 1)
                        for k in (0, data.shape[2] - 1)]).T
    world = (affine @ corners)[:3]
    lo, hi = world.min(axis=1), world.max(axis=1)
    shape = tuple(int(n) for n in np.ceil((hi - lo) / step) + 1)
    out_affine = np.diag([step, step, step, 1.0])
    out_affine[:3, 3] = lo
    return pull(data, affine, shape, out_affine), out_affine


def registration_copy(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The moving image registration sees: unchanged, or anti-aliased to ``MOVING_MM`` / freed of shear.

    Registration runs on a 3 mm template, so finer scans are smoothed and resliced to ``MOVING_MM`` first
    (finer detail cannot help and costs time in SimpleITK's per-level smoothing).
    """
    zooms = voxel_sizes(affine)
    fine = float(zooms.min()) < 0.75 * MOVING_MM
    if not fine and not has_shear(affine):
        return data, affine
    step = MOVING_MM if fine else float(zooms.min())
    sigma = np.sqrt(np.maximum(step**2 - zooms**2, 0.0)) / 2.355 / zooms
    smoothed = ndimage.gaussian_filter(np.asarray(data, np.float32), sigma) if np.any(sigma > 0.25) else data
    return axis_aligned(smoothed, affine, step)


def transform_matrix(tx: sitk.Transform) -> np.ndarray:
    """The 4x4 RAS matrix of an affine-type SimpleITK transform (fixed point -> moving point)."""
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mapped = np.array([tx.TransformPoint(tuple(p)) for p in points])
    lps = np.eye(4)
    lps[:3, 3] = mapped[0]
    lps[:3, :3] = (mapped[1:] - mapped[0]).T
    return LPS @ lps @ LPS


@lru_cache(maxsize=2)
def work_template(head: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The MNI template at ``WORK_MM`` (anti-aliased, [0, 1]) and its affine; ``head`` adds a pseudo skull/scalp."""
    tpl = template_image()
    data = ndimage.gaussian_filter(np.asarray(tpl.dataobj, np.float32), np.sqrt(WORK_MM**2 - 1.0) / 2.355)
    affine = tpl.affine.copy()
    affine[:3, :3] *= WORK_MM
    shape = tuple(int(np.ceil(n / WORK_MM)) for n in tpl.shape)
    out = pull(data, tpl.affine, shape, affine)
    out = np.clip(out / np.percentile(out[out > 0], 99.5), 0, 1).astype(np.float32)
    if head:
        dist = ndimage.distance_transform_edt(out <= 0.1, sampling=WORK_MM)
        out[(dist > SCALP_SHELL_MM[0]) & (dist <= SCALP_SHELL_MM[1])] = SCALP_LEVEL
    out.setflags(write=False)
    return out, affine


def _top_slab_centroid(data: np.ndarray, affine: np.ndarray, threshold: float = 0.1,
                       up: np.ndarray | None = None) -> np.ndarray:
    """RAS centroid (mm) of the voxels above ``threshold`` in the top ``HEAD_SLAB_MM`` of a head along ``up`` (a RAS
    unit vector; world z by default)."""
    step = max(1, int(round(2.0 / float(voxel_sizes(affine).min()))))  # ~2 mm sampling is plenty
    idx = np.argwhere(data[::step, ::step, ::step] > threshold) * step
    if len(idx) == 0:
        raise InputError("the scan has no foreground above the background level")
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    height = world[:, 2] if up is None else world @ up
    top = np.percentile(height, 99.5)
    return world[height >= top - HEAD_SLAB_MM].mean(axis=0)


def _run_stage(fixed: sitk.Image, moving: sitk.Image, tx: sitk.Transform, stage: Stage, seed: int,
               threads: int, progress: Progress) -> float:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(stage.sampling, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(stage.learning_rate, MIN_STEP, stage.iterations, relaxationFactor=0.5,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(stage.shrink))
    reg.SetSmoothingSigmasPerLevel(list(stage.sigmas_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=True)
    reg.SetNumberOfThreads(int(threads))
    reg.AddCommand(sitk.sitkIterationEvent, lambda: progress.cancel_event.is_set() and reg.StopRegistration())
    reg.Execute(fixed, moving)
    progress.check()
    return float(reg.GetMetricValue())


def _start_rotations() -> tuple[tuple[float, float, float], ...]:
    """The starting rotations' Euler angles (radians, about x, y, z), the identity first."""
    axes = [np.deg2rad(START_STEP_DEG * scale * np.arange(-n, n + 1)) for n, scale in zip(START_STEPS, START_SCALES,
                                                                                          strict=True)]
    grid = [tuple(float(a) for a in angles) for angles in product(*axes)]
    return tuple(sorted(grid, key=lambda angles: any(angles)))  # stable: the identity, then the grid's order


START_ROTATIONS = _start_rotations()


def _searched_start(fixed: sitk.Image, moving: sitk.Image, sim: sitk.Similarity3DTransform, threads: int,
                    progress: Progress, retranslate: Callable[[np.ndarray], np.ndarray] | None = None
                    ) -> sitk.Similarity3DTransform | None:
    """A copy of ``sim`` turned to the best of the starting rotations (``START_ROTATIONS``) by the Mattes MI at
    the similarity stage's coarsest level (both images smoothed as it smooths them, the template shrunk as it shrinks
    it, every voxel counted), or None when no rotation beats the identity there. The centre is kept, and the
    translation too unless ``retranslate`` maps each rotation (3x3, SimpleITK's LPS) to its own (a whole head's top
    slab lies along the turned head's up: scored with the upright head's translation, a far-turned head lost to
    small turns). The coarse metric is noisy (at 12 mm it once preferred a 15-degree roll and turn for an upright
    head), so the caller runs the similarity stage from both starts and keeps the better end."""
    sigma, shrink = SIMILARITY.sigmas_mm[0], SIMILARITY.shrink[0]
    level_fixed = sitk.Shrink(sitk.SmoothingRecursiveGaussian(fixed, sigma), [shrink] * 3)
    level_moving = sitk.SmoothingRecursiveGaussian(moving, sigma)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricUseFixedImageGradientFilter(False)  # values only: no gradient images to build for every start
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetNumberOfThreads(int(threads))
    euler = sitk.Euler3DTransform()
    euler.SetCenter(sim.GetCenter())
    euler.SetTranslation(sim.GetTranslation())
    values = []
    for angles in START_ROTATIONS:
        progress.check()
        euler.SetRotation(*angles)
        if retranslate is not None:
            euler.SetTranslation([float(v) for v in retranslate(np.reshape(euler.GetMatrix(), (3, 3)))])
        reg.SetInitialTransform(euler, inPlace=False)
        try:
            value = reg.MetricEvaluate(level_fixed, level_moving)
        except RuntimeError:  # the turned template's samples fall mostly outside the scan (a small field of view)
            value = np.inf
        values.append((value, angles, euler.GetTranslation()))
    best, angles, translation = min(values, key=lambda value: value[0])
    if not best < values[0][0]:  # also when every start's samples fell outside: the identity as before
        return None
    euler.SetRotation(*angles)
    turned = sitk.Similarity3DTransform(sim)
    turned.SetMatrix(euler.GetMatrix())
    turned.SetTranslation(translation)
    return turned


@contextmanager
def _sitk_threads(threads: int) -> Iterator[None]:
    """SimpleITK's default thread count set to ``threads`` for the duration (the registration metric's own
    threader follows the default, not the registration method's setting)."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def register_to_template(data: np.ndarray, affine: np.ndarray, head: bool = False, threads: int | None = None,
                         seed: int = SEED, progress: Progress | None = None) -> tuple[np.ndarray, float]:
    """Affine (12 DOF) registration of a [0, 1] scan (moving) to the MNI template (fixed).

    Moments-centred similarity stage (12 -> 6 mm) from the identity rotation and, when a grid of starting rotations
    (head pitch up to 30 degrees, turn and roll up to 15) finds a better one at 12 mm, from that too, keeping the
    better end; then affine (6 -> 3 mm); Mattes MI on a fixed random sample (``seed``). ``head=True`` registers a
    whole-head scan to the template with a pseudo skull and scalp around it.
    Returns (4x4 RAS matrix MNI mm -> scan mm, final metric value).

    ``threads=None`` registers in one thread, so the same scan gets the same matrix in every run and process (the
    multi-threaded Mattes metric sums its samples in an order that varies from run to run, which moves the matrix
    and, through it, the index); more threads are faster on many cores but reproducible only to a few hundredths
    of a millimetre.
    """
    with _sitk_threads(threads or 1):
        return _register(data, affine, head, threads or 1, seed, as_progress(progress))


def _register(data: np.ndarray, affine: np.ndarray, head: bool, threads: int, seed: int,
              prog: Progress) -> tuple[np.ndarray, float]:
    data, affine = registration_copy(data, affine)
    fixed_data, fixed_affine = work_template(head)
    fixed = to_sitk(fixed_data, fixed_affine)
    moving = to_sitk(data, affine)
    retranslate = None
    if head:
        sim = sitk.Similarity3DTransform()
        centre = _top_slab_centroid(fixed_data, fixed_affine)
        sim.SetCenter([float(v) for v in (LPS[:3, :3] @ centre)])
        sim.SetTranslation([float(v) for v in LPS[:3, :3] @ (_top_slab_centroid(data, affine) - centre)])

        def retranslate(rotation: np.ndarray) -> np.ndarray:  # the top slab along the template's up, turned
            up = LPS[:3, :3] @ rotation @ np.array([0.0, 0.0, 1.0])  # LPS and RAS share the z axis
            return LPS[:3, :3] @ (_top_slab_centroid(data, affine, up=up) - centre)
    else:
        sim = sitk.CenteredTransformInitializer(fixed, moving, sitk.Similarity3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    starts = [sim]
    searched = _searched_start(fixed, moving, sim, threads, prog, retranslate)
    if searched is not None:
        starts.append(searched)
    ends = [(_run_stage(fixed, moving, start, SIMILARITY, seed, threads, prog), start) for start in starts]
    sim = min(ends, key=lambda end: end[0])[1]  # the identity's end on a tie
    aff = sitk.AffineTransform(3)
    aff.SetCenter(sim.GetCenter())
    aff.SetMatrix(sim.GetMatrix())
    aff.SetTranslation(sim.GetTranslation())
    metric = _run_stage(fixed, moving, aff, AFFINE, seed, threads, prog)
    return transform_matrix(aff), metric


# ----------------------------------------------------------------------------------------------------------------
# Scan <-> grid


@lru_cache(maxsize=1)
def _template_brain_1mm() -> np.ndarray:
    data = np.asarray(template_image().dataobj, np.float32)
    return (data > 0.1 * np.percentile(data[data > 0], 99.5)).astype(np.float32)


def _native_brain(img: nib.Nifti1Image, data: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """The brain in native voxels: the given mask, the nonzero part of a skull-stripped scan, or None."""
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != data.shape:
            raise InputError(f"brain mask shape {mask.shape} does not match the scan's {data.shape}")
        brain = mask.astype(bool)
    elif looks_skull_stripped(data, voxel_sizes(img.affine)):
        brain = ndimage.binary_fill_holes(data != data.min())
    else:
        return None
    if not brain.any():
        raise InputError("brain mask is empty (no nonzero voxels)")
    return brain


def _to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient voxel data to the closest RAS axis order (no resampling) with the matching affine."""
    ornt = nib.io_orientation(affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    return ras, affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)


def _on_grid(norm: np.ndarray, brain: np.ndarray, affine: np.ndarray, grid: ModelGrid,
             matrix: np.ndarray) -> np.ndarray:
    """Anti-aliased (Gaussian within the brain) trilinear resampling of a native volume onto ``grid``."""
    zooms = voxel_sizes(affine)
    sigma = np.sqrt(np.maximum(grid.spacing_mm**2 - zooms**2, 0.0)) / 2.355 / zooms
    smoothed = smooth_in_mask(norm, brain, sigma)
    return np.clip(pull(smoothed, affine, grid.shape, grid.affine, matrix), 0.0, 1.0)


def template_brain_native(shape: tuple[int, ...], affine: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The MNI template brain mask mapped into a native voxel array of ``shape`` and ``affine``."""
    brain = pull(_template_brain_1mm(), template_image().affine, shape, affine, np.linalg.inv(matrix)) > 0.5
    if not brain.any():
        raise InputError("the registered MNI brain does not overlap the scan (is it a brain scan?)")
    return brain


def head_brain(data: np.ndarray, zooms: tuple[float, ...], template_brain: np.ndarray) -> np.ndarray:
    """The brain of a whole-head scan from the registered template brain (``template_brain``, native voxels).

    The template brain is affine-registered anatomy, not this brain: it misses sulcal and outer CSF and overhangs
    elsewhere. On the scan normalised with the deep anchor (:func:`normalise_intensity`, ``HEAD_INSET_MM``), the
    brain is the voxels above ``HEAD_LEVEL`` within ``HEAD_BAND_MM`` outside the template brain, opened by
    ``HEAD_OPEN_MM`` (cutting thin bridges to dura and scalp), its largest piece, with everything deeper than
    ``HEAD_CORE_MM`` inside the template brain added, then closed and filled (ventricles). BENCHMARKS.md has its Dice
    with label-map masks.
    """
    sampling = np.asarray(zooms, float)[:3]
    norm = normalise_intensity(data, template_brain, HEAD_INSET_MM, sampling)
    outside = ndimage.distance_transform_edt(~template_brain, sampling=sampling)
    inside = ndimage.distance_transform_edt(np.pad(template_brain, 1), sampling=sampling)[1:-1, 1:-1, 1:-1]
    steps = max(1, int(round(HEAD_OPEN_MM / float(sampling.min()))))
    brain = ndimage.binary_opening((norm > HEAD_LEVEL) & (outside <= HEAD_BAND_MM), iterations=steps)
    labels, n = ndimage.label(brain)
    if n > 1:
        brain = labels == 1 + int(np.argmax(ndimage.sum_labels(brain, labels, range(1, n + 1))))
    brain = ndimage.binary_closing(brain | (inside > HEAD_CORE_MM), iterations=steps)
    return ndimage.binary_fill_holes(brain)


def prepare_scan(img: nib.Nifti1Image, grid: ModelGrid, mask: np.ndarray | None = None, register: bool = True,
                 progress: Progress | Callable[..., None] | None = None, threads: int | None = None,
                 intensity_inset_mm: float = 0.0, prenormalised: bool = False) -> PreparedScan:
    """Mask, normalise, register (affine, to MNI) and resample a 3D scan onto ``grid``.

    ``mask`` is a brain mask in the scan's voxel array; without one a skull-stripped scan's nonzero voxels are the
    brain, and a whole-head scan gets the registered template brain refined by intensity (:func:`head_brain`; with a
    warning). ``register=False`` takes the
    scan as already in MNI space. ``threads`` sets SimpleITK's threads for the registration (default one, which makes
    it reproducible: :func:`register_to_template`). ``intensity_inset_mm`` places the lower intensity anchor inside
    the brain (:func:`normalise_intensity`; a model's ``ImagingConfig.intensity_inset_mm``). ``prenormalised`` says
    the brain's intensities were already normalised that way (a prepared volume saved on the grid, like the demo
    scans): they are kept, since normalising the 4 mm volume again would not reproduce the scan's own 1 mm
    percentiles; it does not apply to a whole-head scan. ``progress`` is a
    :class:`~normcore._utils.progress.Progress` or callback; cancelling stops the registration between iterations.
    """
    prog = as_progress(progress)
    total = 5
    prog.update("reorient", 0, total)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim != 3:
        raise InputError(f"a 3D scan is expected, got shape {data.shape}")
    affine = np.asarray(img.affine, float)
    zooms = tuple(float(z) for z in voxel_sizes(affine))
    warnings: list[str] = []

    prog.update("brain mask", 1, total)
    brain = _native_brain(img, data, mask)
    head = brain is None
    if head:
        warnings.append(NOT_STRIPPED_WARNING)

    prog.update("normalise", 2, total)
    # a whole head is first normalised over the head, only to register it; its brain is normalised below
    if head:
        norm = normalise_intensity(data, data > data.min())
    else:
        norm = np.clip(data, 0.0, 1.0).astype(np.float32) if prenormalised else \
            normalise_intensity(data, brain, intensity_inset_mm, zooms)

    prog.update("register", 3, total)
    matrix, metric = np.eye(4), None
    if register:
        moving = norm if head else norm * brain
        matrix, metric = register_to_template(*_to_ras(moving, affine), head=head, threads=threads, progress=prog)

    prog.update("resample", 4, total)
    tpl_brain = template_on_grid(grid)[1]
    if head:  # the registered template's brain, refined by intensity, becomes the scan's mask, and the brain alone
        # is registered again, as a scan with a mask is: healthy whole-head scans then score nearer their masked index
        brain = head_brain(data, zooms, template_brain_native(data.shape, affine, matrix))
        norm = normalise_intensity(data, brain, intensity_inset_mm, zooms)
        if register:
            matrix, metric = register_to_template(*_to_ras(norm * brain, affine), head=False, threads=threads,
                                                  progress=prog)
    grid_brain = pull(brain, affine, grid.shape, grid.affine, matrix) > 0.5
    volume = _on_grid(norm, brain, affine, grid, matrix) * grid_brain

    overlap = None if head else dice(grid_brain, tpl_brain)
    if overlap is not None and overlap < POOR_DICE:
        hint = "registration may have failed" if register else "is the scan really in MNI space?"
        warnings.append(f"brain overlaps the MNI template brain poorly (Dice {overlap:.2f}): {hint}")
    facts = scan_facts(zooms, grid_brain, tpl_brain, overlap, volume)
    facts["mask_source"] = "template" if head else ("given" if mask is not None else "skull-stripped")
    prog.update("done", total, total)
    return PreparedScan(volume=volume.astype(np.float32), brain=grid_brain, grid=grid, native=img, native_brain=brain,
                        matrix=matrix, warnings=warnings, registration_metric=metric, template_dice=overlap,
                        facts=facts, intensity_inset_mm=intensity_inset_mm)


def renormalised(prepared: PreparedScan, intensity_inset_mm: float) -> PreparedScan:
    """``prepared`` with its grid volume remade under another normalisation setting (same brain and registration),
    for a second model fitted with another ``intensity_inset_mm``; ``prepared`` itself when the setting matches."""
    if float(intensity_inset_mm) == float(prepared.intensity_inset_mm):
        return prepared
    data = np.asarray(prepared.native.get_fdata(dtype=np.float32))
    affine = np.asarray(prepared.native.affine, float)
    norm = normalise_intensity(data, prepared.native_brain, intensity_inset_mm, voxel_sizes(affine))
    volume = _on_grid(norm, prepared.native_brain, affine, prepared.grid, prepared.matrix) * prepared.brain
    return dataclasses.replace(prepared, volume=volume.astype(np.float32), warnings=list(prepared.warnings),
                               intensity_inset_mm=float(intensity_inset_mm))


def to_native(prepared: PreparedScan, grid_volume: np.ndarray, order: int = 1,
              mask_outside: bool = True) -> nib.Nifti1Image:
    """Map a volume on the model grid back to the original scan's voxel array and affine (float32).

    ``order`` is the spline order (0 for labels or masks); ``mask_outside`` zeroes voxels outside the native brain.
    """
    grid_volume = np.asarray(grid_volume, np.float32)
    if grid_volume.shape != tuple(prepared.grid.shape):
        raise ValueError(f"grid volume shape {grid_volume.shape} != grid shape {tuple(prepared.grid.shape)}")
    native = prepared.native
    shape = tuple(native.shape[:3])
    out = pull(grid_volume, prepared.grid.affine, shape, native.affine, np.linalg.inv(prepared.matrix), order=order)
    if mask_outside:
        out[~prepared.native_brain] = 0.0
    return float_image(out, native)
