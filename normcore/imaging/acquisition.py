"""Is a scan like the ones the model was trained on? Voxel size, brain coverage, registration overlap, sharpness.

An abnormality index is calibrated on the healthy scans the model saw. A scan acquired very differently
(coarse voxels), prepared differently (a mask covering part of the brain, a failed registration) or smoother than
they were (resliced with trilinear interpolation, filtered) gets an index that looks like a finding but is not one.
:func:`scan_facts` measures a prepared scan; :func:`envelope` summarises the training scans' facts (stored in the
model card); :func:`check` turns a scan outside the envelope into warnings shown beside the index.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

VOXEL_SLACK = 1.5  # a scan's coarsest voxel edge may be this many times the training scans' coarsest
COVERAGE_SLACK = 0.05  # brain coverage may fall this far below the training scans' lowest
DICE_SLACK = 0.05  # the same for the overlap with the template brain
# :func:`sharpness` may fall this far below the training scans' lowest: about what sampling the same brain again (a
# cubic reslice by a quarter voxel) moves it (BENCHMARKS.md)
SHARPNESS_SLACK = 0.02
SHARPNESS_BLOCK = 6  # voxels per block edge of :func:`sharpness` (24 mm on a 4 mm grid)

DEFAULT_ENVELOPE = {"voxel_mm_max": 2.0, "brain_coverage_min": 0.85, "template_dice_min": 0.80, "n_scans": 0,
                    "source": "default for models trained before acquisition facts were recorded: T1 scans with "
                              "voxels up to 2 mm and whole-brain masks (lenient: a model's own record is better)"}


def sharpness(volume: np.ndarray, brain: np.ndarray) -> float | None:
    """How much fine detail a prepared volume has at its own voxel scale: the mean squared second difference over
    the mean squared first difference (along the three axes), inside ``brain`` eroded by one voxel.

    3 for white noise, lower the smoother the image (a Gaussian blur or a trilinear reslice lowers it), higher for a
    noisier one; a ratio, so it does not depend on the intensity scale. Taken in blocks of ``SHARPNESS_BLOCK``
    voxels per edge (those at least half inside the eroded brain) and the median over blocks returned, so a focal
    lesion's edges, which add fine detail where they are, barely move it while smoothing of the whole scan does.
    None when no block is inside the brain or the volume is flat.
    """
    v = np.asarray(volume, np.float64)
    inner = ndimage.binary_erosion(np.asarray(brain, bool), iterations=1)
    first, n_first = np.zeros(v.shape), np.zeros(v.shape)
    second, n_second = np.zeros(v.shape), np.zeros(v.shape)
    for axis in range(3):
        n = v.shape[axis]
        lower, upper = (tuple(slice(a, b) if ax == axis else slice(None) for ax in range(3)) for a, b in
                        ((0, n - 1), (1, n)))
        pair = inner[lower] & inner[upper]  # first difference between a voxel and its upper neighbour
        first[lower] += np.where(pair, np.diff(v, axis=axis) ** 2, 0.0)
        n_first[lower] += pair
        centre = tuple(slice(1, n - 1) if ax == axis else slice(None) for ax in range(3))
        triple = inner[centre]  # second difference centred on a voxel
        second[centre] += np.where(triple, np.diff(v, n=2, axis=axis) ** 2, 0.0)
        n_second[centre] += triple
    blocks = np.ravel_multi_index(np.indices(v.shape) // SHARPNESS_BLOCK,
                                  tuple(-(-np.asarray(v.shape) // SHARPNESS_BLOCK))).ravel()
    sums = [np.bincount(blocks, a.ravel()) for a in (first, n_first, second, n_second)]
    inside = np.bincount(blocks, inner.ravel().astype(float))
    keep = (inside >= SHARPNESS_BLOCK**3 / 2) & (sums[0] > 0) & (sums[3] > 0)
    if not keep.any():
        return None
    ratio = (sums[2][keep] / sums[3][keep]) / (sums[0][keep] / sums[1][keep])
    return round(float(np.median(ratio)), 4)


def scan_facts(voxel_mm: tuple[float, float, float], brain: np.ndarray, template_brain: np.ndarray,
               template_dice: float | None, volume: np.ndarray | None = None) -> dict:
    """The facts of one prepared scan: coarsest voxel edge (mm), share of the template brain its brain mask
    covers on the model grid, the Dice overlap of the two (None when the template brain was used) and, given the
    prepared grid ``volume``, its :func:`sharpness`."""
    covered = float((brain & template_brain).sum() / max(int(template_brain.sum()), 1))
    facts = {"voxel_mm": round(float(max(voxel_mm)), 3), "brain_coverage": round(covered, 4),
             "template_dice": None if template_dice is None else round(float(template_dice), 4)}
    if volume is not None:
        facts["sharpness"] = sharpness(volume, brain)
    return facts


def envelope(facts: list[dict]) -> dict:
    """What the training scans looked like: coarsest voxel, lowest coverage and overlap, the range of their
    sharpness (when every scan's was measured), and their number."""
    dice = [f["template_dice"] for f in facts if f.get("template_dice") is not None]
    sharp = [f.get("sharpness") for f in facts]
    measured = all(s is not None for s in sharp)
    return {"voxel_mm_max": max(f["voxel_mm"] for f in facts),
            "brain_coverage_min": min(f["brain_coverage"] for f in facts),
            "template_dice_min": min(dice) if dice else None,
            **({"sharpness_min": min(sharp), "sharpness_max": max(sharp)} if measured else {}),
            "n_scans": len(facts), "source": "the model's training scans"}


def gates(facts: dict, env: dict | None, grid_mm: float = 0.0) -> list[dict]:
    """The quality gates of a prepared scan against the envelope ``env`` (``DEFAULT_ENVELOPE`` when the model
    has none): one entry per gate with ``gate``, the scan's ``value``, the ``limit`` it is held to, ``passed``
    and, for a failed gate, the ``message`` to show. The index of a scan failing any gate is unreliable.

    Voxels no coarser than the model grid's (``grid_mm``) lose nothing the model uses, so the voxel limit is
    the larger of ``VOXEL_SLACK`` x the training scans' coarsest and the grid's voxel size. A brain taken from
    the registered template (no mask, scan not skull-stripped) fails its gate: healthy whole-head scans scored
    that way landed far from their masked centiles (BENCHMARKS.md)."""
    env = env or DEFAULT_ENVELOPE
    out = []

    def gate(name: str, value, limit: str, passed: bool, message: str) -> None:
        out.append({"gate": name, "value": value, "limit": limit, "passed": bool(passed),
                    "message": None if passed else message})

    source = facts.get("mask_source")
    gate("brain mask", source or "not recorded", "a mask or a skull-stripped scan", source != "template",
         "no brain mask and the scan is not skull-stripped: the brain is the registered template's refined by "
         "intensity, and 20 healthy whole-head scans scored this way landed on average 22 centile points from their "
         "centiles with a mask")
    limit = max(VOXEL_SLACK * env["voxel_mm_max"], grid_mm)
    gate("voxel size (mm)", facts["voxel_mm"], f"<= {limit:g}", facts["voxel_mm"] <= limit,
         f"voxels of {facts['voxel_mm']:g} mm are much coarser than the model's training scans (up to "
         f"{env['voxel_mm_max']:g} mm) and its {grid_mm:g} mm grid: the index is not calibrated for such scans")
    floor = env["brain_coverage_min"] - COVERAGE_SLACK
    gate("brain coverage", facts["brain_coverage"], f">= {floor:.2f}", facts["brain_coverage"] >= floor,
         f"the brain mask covers {100 * facts['brain_coverage']:.0f}% of the template brain (training scans: at "
         f"least {100 * env['brain_coverage_min']:.0f}%): a partial brain, or a mask from another scan? The index "
         "is not calibrated for it")
    dice_min = env.get("template_dice_min")
    if facts.get("template_dice") is not None and dice_min is not None:
        gate("registration (Dice with the template brain)", facts["template_dice"], f">= {dice_min - DICE_SLACK:.2f}",
             facts["template_dice"] >= dice_min - DICE_SLACK,
             f"the brain overlaps the template brain less (Dice {facts['template_dice']:.2f}) than any training "
             f"scan did ({dice_min:.2f}): check the registration")
    sharp, lo, hi = facts.get("sharpness"), env.get("sharpness_min"), env.get("sharpness_max")
    if sharp is not None and lo is not None and hi is not None:
        # only the smooth side: a lesion's edges add fine detail, and a finding must not make its own index unreliable
        low = lo - SHARPNESS_SLACK
        gate("sharpness (fine detail on the model grid)", sharp, f">= {low:.2f}", sharp >= low,
             f"the scan is smoother than any of the model's training scans (sharpness {sharp:.2f}; training scans "
             f"{lo:.2f}-{hi:.2f}): was it resliced with trilinear interpolation, filtered by another tool, or "
             "acquired smoother? The index follows how smooth a scan is, so it is not calibrated for this scan")
    return out


def check(facts: dict, env: dict | None, grid_mm: float = 0.0) -> list[str]:
    """Warnings for a scan outside the envelope (the messages of its failed :func:`gates`; the brain-mask gate's
    warning is given by the preprocessing itself, so it is not repeated here)."""
    return [g["message"] for g in gates(facts, env, grid_mm) if not g["passed"] and g["gate"] != "brain mask"]
