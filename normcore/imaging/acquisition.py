"""Is a scan like the ones the model was trained on? Voxel size, brain coverage and registration overlap.

An abnormality index is calibrated on the healthy scans the model saw. A scan acquired very differently
(coarse voxels) or prepared differently (a mask covering part of the brain, a failed registration) gets
an index that looks like a finding but is not one. :func:`scan_facts` measures a prepared scan;
:func:`envelope` summarises the training scans' facts (stored in the model card); :func:`check` turns a
scan outside the envelope into warnings shown beside the index.
"""

from __future__ import annotations

import numpy as np

VOXEL_SLACK = 1.5  # a scan's coarsest voxel edge may be this many times the training scans' coarsest
COVERAGE_SLACK = 0.05  # brain coverage may fall this far below the training scans' lowest
DICE_SLACK = 0.05  # the same for the overlap with the template brain

DEFAULT_ENVELOPE = {"voxel_mm_max": 2.0, "brain_coverage_min": 0.85, "template_dice_min": 0.80, "n_scans": 0,
                    "source": "default for models trained before acquisition facts were recorded: T1 scans with "
                              "voxels up to 2 mm and whole-brain masks (lenient: a model's own record is better)"}


def scan_facts(voxel_mm: tuple[float, float, float], brain: np.ndarray, template_brain: np.ndarray,
               template_dice: float | None) -> dict:
    """The facts of one prepared scan: coarsest voxel edge (mm), share of the template brain its brain mask
    covers on the model grid, and the Dice overlap of the two (None when the template brain was used)."""
    covered = float((brain & template_brain).sum() / max(int(template_brain.sum()), 1))
    return {"voxel_mm": round(float(max(voxel_mm)), 3), "brain_coverage": round(covered, 4),
            "template_dice": None if template_dice is None else round(float(template_dice), 4)}


def envelope(facts: list[dict]) -> dict:
    """What the training scans looked like: coarsest voxel, lowest coverage and overlap, and their number."""
    dice = [f["template_dice"] for f in facts if f.get("template_dice") is not None]
    return {"voxel_mm_max": max(f["voxel_mm"] for f in facts),
            "brain_coverage_min": min(f["brain_coverage"] for f in facts),
            "template_dice_min": min(dice) if dice else None, "n_scans": len(facts),
            "source": "the model's training scans"}


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
         "intensity, and 20 healthy whole-head scans scored this way landed on average 24 centile points from their "
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
    return out


def check(facts: dict, env: dict | None, grid_mm: float = 0.0) -> list[str]:
    """Warnings for a scan outside the envelope (the messages of its failed :func:`gates`; the brain-mask gate's
    warning is given by the preprocessing itself, so it is not repeated here)."""
    return [g["message"] for g in gates(facts, env, grid_mm) if not g["passed"] and g["gate"] != "brain mask"]
