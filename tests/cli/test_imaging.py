"""``mri-fit`` and ``mri-score`` end to end at the tiny configuration on synthetic NIfTI files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from normcore._utils.errors import InputError
from normcore.cli import main
from normcore.imaging.cohort import load_cohort, read_participants, split_indices
from normcore.imaging.grid import ModelGrid, template_on_grid

GRID_2MM = ModelGrid(6.0, (32, 36, 32))  # the "native" scans: coarse, for speed


def write_scans(root, n: int):
    """``n`` skull-stripped scans in MNI space (a 6 mm grid, LPS-flipped storage) + participants.csv."""
    (root / "t1").mkdir(parents=True)
    template, brain = template_on_grid(GRID_2MM)
    rng = np.random.default_rng(0)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff = GRID_2MM.affine.copy()
    aff[:, :3] = aff[:, :3] @ flip[:3, :3]  # stored with the x and y axes reversed (LPS)
    aff[:3, 3] = GRID_2MM.affine[:3, :3] @ (np.array(GRID_2MM.shape) - 1) * np.array([1, 1, 0]) + GRID_2MM.affine[:3, 3]
    rows = []
    for i in range(n):
        vol = np.clip(template * (1 + 0.05 * rng.standard_normal()) + 0.02 * rng.standard_normal(template.shape), 0,
                      1) * brain
        nib.save(nib.Nifti1Image((vol[::-1, ::-1] * 1000).astype(np.float32), aff), root / "t1" / f"s{i:02d}_T1.nii.gz")
        rows.append({"subject_id": f"s{i:02d}", "age": 20 + 55 * i / max(n - 1, 1), "sex": "MF"[i % 2]})
    pd.DataFrame(rows).to_csv(root / "participants.csv", index=False)
    return root


@pytest.fixture(scope="module")
def scan_folder(tmp_path_factory):
    """12 scans (see ``write_scans``)."""
    return write_scans(tmp_path_factory.mktemp("scans"), 12)


def test_mri_fit_then_score_writes_maps_in_scan_space(scan_folder, tmp_path, capsys):
    model_dir = tmp_path / "model"
    rc = main(["mri-fit", "--images", str(scan_folder / "t1"), "--participants", str(scan_folder / "participants.csv"),
               "--config", "tiny", "--holdout", "2", "--validation", "0.4", "--out", str(model_dir), "--quiet",
               "--device", "cpu", "--cross-fit", "2"])
    assert rc == 0 and (model_dir / "model.safetensors").is_file()
    card = json.loads((model_dir / "model.json").read_text())
    assert len(card["data"]["test_ids"]) == 2 and not set(card["data"]["test_ids"]) & set(card["data"]["train_ids"])
    # the reference rests on every healthy scan that is not held out, each restored out of fold
    healthy = card["data"]["train_ids"] + card["data"]["validation_ids"]
    assert card["reference"]["scheme"] == "cross-fitted" and card["reference"]["n"] == 10
    assert sorted(card["reference"]["ids"]) == sorted(healthy) and card["reference"]["folds"] == 2
    scan = scan_folder / "t1" / f"{card['data']['test_ids'][0]}_T1.nii.gz"
    out = tmp_path / "out"
    rc = main(["mri-score", str(model_dir), str(scan), "--age", "40", "--sex", "F", "--out", str(out), "--quiet",
               "--device", "cpu", "--report", str(tmp_path / "scan-report.pdf")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "scan-report.pdf").read_bytes().startswith(b"%PDF-")  # the scan's report beside its maps
    native = nib.load(scan)
    for name in ("restoration", "anomaly", "zmap"):
        img = nib.load(out / f"{name}.nii.gz")
        assert img.shape == native.shape and np.allclose(img.affine, native.affine)
    result = json.loads((out / "result.json").read_text())
    assert set(result["abnormality_index"]) == {"top1", "top5", "peak"} and result["sex"] == "F"
    assert result["headline_index"] == "top1"
    assert result["healthy_reference_n"] == 10 and result["healthy_reference_scheme"] == "cross-fitted"
    assert result["index_inset_mm"] == 0.0  # the tiny configuration ranks every brain voxel
    assert result["brain_age"] is None  # 6 training scans: too few for a brain-age read-out
    assert 0 <= result["healthy_centile"]["top1"] <= 100
    rc = main(["mri-score", str(model_dir), str(scan), "--age", "40", "--sex", "1", "--out", str(out / "m"),
               "--method", "autoencoder", "--quiet", "--device", "cpu"])
    assert rc == 0 and json.loads((out / "m" / "result.json").read_text())["sex"] == "M"
    assert json.loads((out / "m" / "result.json").read_text())["healthy_centile_band"] is None  # not asked for
    capsys.readouterr()
    rc = main(["mri-score", str(model_dir), str(scan), "--age", "40", "--sex", "F", "--out", str(out / "b"),
               "--resamplings", "2", "--quiet", "--device", "cpu"])
    band = json.loads((out / "b" / "result.json").read_text())["healthy_centile_band"]
    assert rc == 0 and band["n_resamplings"] == 2 and band["low"] <= band["centiles"][0] <= band["high"]
    assert "resliced 2 times by a fraction of a voxel, the centile ranged" in capsys.readouterr().out
    # the card records what the training scans looked like; a partial brain mask is flagged beside the index
    env = card["acquisition"]
    assert env["n_scans"] == len(card["data"]["train_ids"]) and 0 < env["brain_coverage_min"] <= 1
    assert "brain_coverage" in result["acquisition"] and result["warnings"] == []
    assert result["index_reliable"] is True and result["acquisition"]["mask_source"] == "skull-stripped"
    assert {g["gate"] for g in result["quality"]} >= {"brain mask", "voxel size (mm)", "brain coverage",
                                                      "sharpness (fine detail on the model grid)"}
    assert 0 < env["sharpness_min"] <= result["acquisition"]["sharpness"] + 0.02 and env["sharpness_max"] < 3
    data = native.get_fdata()
    mask = (data > np.percentile(data, 60)).astype(np.uint8)
    mask[:, :, : mask.shape[2] * 2 // 3] = 0  # only the top third of the head
    nib.save(nib.Nifti1Image(mask, native.affine), tmp_path / "partial_mask.nii.gz")
    capsys.readouterr()
    rc = main(["mri-score", str(model_dir), str(scan), "--age", "40", "--sex", "F", "--mask",
               str(tmp_path / "partial_mask.nii.gz"), "--out", str(out / "p"), "--quiet", "--device", "cpu"])
    assert rc == 0 and "of the template brain (training scans" in capsys.readouterr().out
    partial = json.loads((out / "p" / "result.json").read_text())
    assert any("partial brain" in w for w in partial["warnings"])
    assert partial["index_reliable"] is False and partial["acquisition"]["mask_source"] == "given"
    failed = [g["gate"] for g in partial["quality"] if not g["passed"]]
    assert "brain coverage" in failed and "brain mask" not in failed and "voxel size (mm)" not in failed


def test_mri_score_refuses_bad_inputs_with_messages(scan_folder, tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    rc = main(["mri-score", str(tmp_path / "missing_model"), str(bad), "--age", "40", "--sex", "F", "--out",
               str(tmp_path / "o")])
    assert rc == 2 and "not a model folder" in capsys.readouterr().err
    rc = main(["mri-score", str(tmp_path / "missing_model"), str(bad), "--age", "40", "--sex", "F", "--out",
               str(tmp_path / "o"), "--report", str(tmp_path / "r.docx")])
    assert rc == 2 and "name a .html or .pdf file" in capsys.readouterr().err
    rc = main(["mri-fit", "--images", str(tmp_path), "--participants", str(scan_folder / "participants.csv"),
               "--out", str(tmp_path / "m"), "--config", "tiny"])
    assert rc == 2 and "no scan in" in capsys.readouterr().err
    rc = main(["mri-fit", "--images", str(scan_folder / "t1"), "--participants", str(scan_folder / "participants.csv"),
               "--out", str(tmp_path / "m"), "--config", "tiny", "--method", "diffae", "--cross-fit", "3"])
    assert rc == 2 and "--cross-fit applies to the restoration model" in capsys.readouterr().err
    rc = main(["mri-fit", "--images", str(scan_folder / "t1"), "--participants", str(scan_folder / "participants.csv"),
               "--out", str(tmp_path / "m"), "--config", "tiny", "--age-supervision", "1"])
    assert rc == 2 and "--age-supervision applies to the diffusion autoencoder" in capsys.readouterr().err
    rc = main(["mri-fit", "--images", str(scan_folder / "t1"), "--participants", str(scan_folder / "participants.csv"),
               "--out", str(tmp_path / "m"), "--config", "tiny", "--latent-prior", "constant"])
    assert rc == 2 and "--latent-prior applies to the diffusion autoencoder" in capsys.readouterr().err


def test_participants_table_validation(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("id,age\na,30\n")
    with pytest.raises(InputError, match="missing column"):
        read_participants(p)
    p.write_text("participant_id,age,sex\na,thirty,F\n")
    with pytest.raises(InputError, match="non-numeric or missing age"):
        read_participants(p)


def test_split_is_disjoint_and_reproducible():
    tr, va, te = split_indices(30, 0.2, 5, seed=1)
    assert len(te) == 5 and len(va) == 5 and len(tr) == 20
    assert not (set(tr) & set(va) | set(tr) & set(te) | set(va) & set(te))
    assert all((a == b).all() for a, b in zip((tr, va, te), split_indices(30, 0.2, 5, seed=1), strict=True))
    with pytest.raises(InputError, match="too few"):
        split_indices(8, 0.2, 2, seed=0)


def test_misspelt_config_override_is_refused(scan_folder, tmp_path, capsys):
    """Bug: unknown override keys were merged into the configuration and silently ignored."""
    rc = main(["mri-fit", "--images", str(scan_folder / "t1"), "--participants", str(scan_folder / "participants.csv"),
               "--out", str(tmp_path / "m"), "--config", "tiny", "--config-overrides", '{"dit_stepz": 5}'])
    assert rc == 2 and "dit_stepz" in capsys.readouterr().err
    rc = main(["mri-fit", "--images", str(scan_folder / "t1"), "--participants", str(scan_folder / "participants.csv"),
               "--out", str(tmp_path / "m"), "--config", "tiny", "--config-overrides", "{dit_steps: 5"])
    assert rc == 2 and "not valid JSON" in capsys.readouterr().err


def test_load_cohort_of_listed_ids_keeps_their_order(scan_folder):
    grid = ModelGrid(12.0, (16, 18, 16))
    cohort = load_cohort(scan_folder / "t1", scan_folder / "participants.csv", grid, ids=["s03", "s01"])
    assert cohort.ids == ["s03", "s01"] and list(cohort.ages) == [35.0, 25.0] and cohort.sexes == ["F", "F"]
    assert cohort.volumes.shape == (2, *grid.shape)
    with pytest.raises(InputError, match="s99"):
        load_cohort(scan_folder / "t1", scan_folder / "participants.csv", grid, ids=["s01", "s99"])


def test_mri_fit_diffae_then_mri_latent_writes_counterfactuals_in_scan_space(tmp_path, capsys):
    """The diffusion autoencoder end to end: 28 scans (its latent model needs 20 training rows), 2 held out."""
    folder = write_scans(tmp_path / "scans", 28)
    model_dir = tmp_path / "dae"
    rc = main(["mri-fit", "--method", "diffae", "--semantic-dim", "4", "--images", str(folder / "t1"),
               "--participants", str(folder / "participants.csv"), "--config", "tiny", "--holdout", "2",
               "--out", str(model_dir), "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((model_dir / "model.json").read_text())
    assert card["format"] == "normcore-mri-diffae/1" and len(card["data"]["train_ids"]) == 22
    scan = folder / "t1" / f"{card['data']['test_ids'][0]}_T1.nii.gz"
    out = tmp_path / "latent"
    capsys.readouterr()
    rc = main(["mri-latent", str(model_dir), str(scan), "--age", "50", "--sex", "F", "--at-ages", "30,70.5",
               "--out", str(out), "--quiet", "--device", "cpu", "--age-guidance", "3"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "whole-brain latent deviation: centile" in printed and "brain age" in printed
    native = nib.load(scan)
    for name in ("counterfactual_age-30", "counterfactual_age-70.5", "counterfactual_age-30_difference"):
        img = nib.load(out / f"{name}.nii.gz")
        assert img.shape == native.shape and np.allclose(img.affine, native.affine)
    result = json.loads((out / "latent.json").read_text())
    dev = result["latent_deviation"]
    assert 0 <= dev["centile"] <= 1 and len(dev["per_dimension_z"]) == 4 and dev["n_reference"] == 4
    assert {"multivariate_z", "cosine_similarity"} <= set(dev) and result["scores_reliable"] is True
    assert [v["age"] for v in result["volumes_ml"]] == [50, 30, 70.5]
    brain_age = result["brain_age"]
    assert 0 <= brain_age["centile"] <= 1 and brain_age["n_reference"] == 26  # 22 training + 4 validation scans
    assert brain_age["raw_gap_years"] == pytest.approx(brain_age["predicted_age"] - 50)
    assert result["counterfactual_age_guidance"] == 3.0 and result["counterfactual_mode"] == "both"
    # each model answers its own command, and says which to use
    capsys.readouterr()
    assert main(["mri-score", str(model_dir), str(scan), "--age", "50", "--sex", "F", "--out",
                 str(tmp_path / "x"), "--quiet"]) == 2
    assert "diffusion autoencoder (for mri-latent)" in capsys.readouterr().err
    assert main(["mri-latent", str(model_dir), str(scan), "--age", "50", "--sex", "F", "--at-ages", "40,abc",
                 "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "give numbers of years" in capsys.readouterr().err
    assert main(["mri-latent", str(model_dir), str(scan), "--age", "50", "--sex", "F", "--at-ages", "40",
                 "--age-guidance", "0", "--out", str(tmp_path / "z"), "--quiet"]) == 2
    assert "age guidance 0.0: a number from 1 to 20" in capsys.readouterr().err
