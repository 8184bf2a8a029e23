"""Scans unlike the training scans (coarse voxels, partial brain masks, poor overlap) are flagged."""

from __future__ import annotations

import numpy as np

from normcore.imaging.acquisition import DEFAULT_ENVELOPE, check, envelope, gates, scan_facts


def test_facts_and_envelope_of_training_scans():
    tpl = np.zeros((10, 10, 10), bool)
    tpl[2:8, 2:8, 2:8] = True
    half = tpl.copy()
    half[:, :, 5:] = False
    full = scan_facts((1.0, 1.0, 1.2), tpl, tpl, 1.0)
    part = scan_facts((0.9, 0.9, 0.9), half, tpl, 0.67)
    assert full == {"voxel_mm": 1.2, "brain_coverage": 1.0, "template_dice": 1.0}
    assert part["brain_coverage"] == 0.5
    env = envelope([full, {**full, "voxel_mm": 1.0, "brain_coverage": 0.93, "template_dice": 0.9}])
    assert env["voxel_mm_max"] == 1.2 and env["brain_coverage_min"] == 0.93 and env["template_dice_min"] == 0.9
    assert env["n_scans"] == 2


def test_scans_outside_the_envelope_get_warnings():
    env = {"voxel_mm_max": 1.2, "brain_coverage_min": 0.93, "template_dice_min": 0.9, "n_scans": 99}
    assert check({"voxel_mm": 1.2, "brain_coverage": 0.95, "template_dice": 0.92}, env) == []
    coarse = check({"voxel_mm": 10.0, "brain_coverage": 0.95, "template_dice": 0.92}, env)
    assert len(coarse) == 1 and "10 mm" in coarse[0] and "not calibrated" in coarse[0]
    on_grid = {"voxel_mm": 4.0, "brain_coverage": 0.95, "template_dice": 0.92}  # resampled to a 4 mm model grid
    assert check(on_grid, env) and check(on_grid, env, grid_mm=4.0) == []
    partial = check({"voxel_mm": 1.0, "brain_coverage": 0.5, "template_dice": 0.6}, env)
    assert len(partial) == 2 and "covers 50%" in partial[0] and "Dice 0.60" in partial[1]
    assert check({"voxel_mm": 1.0, "brain_coverage": 0.95, "template_dice": None}, env) == []  # template used
    assert check({"voxel_mm": 3.5, "brain_coverage": 0.95, "template_dice": None}, None)  # default envelope
    assert DEFAULT_ENVELOPE["voxel_mm_max"] * 1.5 < 3.5


def test_quality_gates_say_which_gate_a_scan_fails():
    env = {"voxel_mm_max": 1.2, "brain_coverage_min": 0.93, "template_dice_min": 0.9, "n_scans": 99}
    good = {"voxel_mm": 1.0, "brain_coverage": 0.95, "template_dice": 0.92, "mask_source": "given"}
    assert [g["gate"] for g in gates(good, env)] == ["brain mask", "voxel size (mm)", "brain coverage",
                                                   "registration (Dice with the template brain)"]
    assert all(g["passed"] and g["message"] is None for g in gates(good, env))
    failed = {g["gate"]: g for g in gates({**good, "voxel_mm": 10.0, "template_dice": 0.6}, env) if not g["passed"]}
    assert set(failed) == {"voxel size (mm)", "registration (Dice with the template brain)"}
    assert failed["voxel size (mm)"]["value"] == 10.0 and failed["voxel size (mm)"]["limit"] == "<= 1.8"
    # a brain taken from the template fails its gate; its warning comes from the preprocessing, not from check()
    head = {**good, "template_dice": None, "mask_source": "template"}
    assert [g["gate"] for g in gates(head, env) if not g["passed"]] == ["brain mask"]
    assert check(head, env) == []
    assert all(g["passed"] for g in gates({"voxel_mm": 1.0, "brain_coverage": 0.95}, env))  # facts of older scans
