"""A folder of scans scored into one table: rows as mri-score gives them alone, bad scans recorded, and the same
table from one process or two torchrun processes."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from normcore._utils.errors import InputError
from normcore.imaging.cohort_scores import COLUMNS, map_folder, map_folders, score_cohort
from normcore.imaging.pipeline import score_scan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort_folder(tmp_path_factory, tiny_cohort):
    """Five scans already in MNI space on the tiny grid (the cohort's last two unseen by the model), a participant
    without a scan, one whose file is not a NIfTI, and one whose id would climb out of the maps folder."""
    root = tmp_path_factory.mktemp("cohort")
    (root / "t1").mkdir()
    grid, c = tiny_cohort["grid"], tiny_cohort
    rows = []
    for k, i in enumerate([12, 13, 0, 5, 9]):
        sid = f"sub-{k:02d}" if k < 4 else "../escape"
        name = f"sub-{k:02d}_T1w.nii.gz" if k < 4 else "..escape_T1w.nii.gz"
        nib.save(nib.Nifti1Image(c["volumes"][i] * 1000, grid.affine), root / "t1" / name)
        rows.append({"participant_id": sid, "age": round(float(c["ages"][i]), 1), "sex": c["sexes"][i]})
    rows[4]["participant_id"] = "..escape"  # files are found by id prefix; the maps folder must stay inside
    (root / "t1" / "sub-05_T1w.nii.gz").write_bytes(b"not a nifti")
    rows += [{"participant_id": "sub-05", "age": 50, "sex": "F"}, {"participant_id": "sub-06", "age": 60, "sex": "M"}]
    pd.DataFrame(rows).to_csv(root / "participants.csv", index=False)
    return root


def test_rows_equal_single_scan_scores_and_bad_scans_are_recorded(tiny_imaging_model, cohort_folder, tmp_path):
    table = score_cohort(tiny_imaging_model, cohort_folder / "t1", cohort_folder / "participants.csv", seed=3,
                         register=False, maps_dir=tmp_path / "maps")
    assert list(table.columns) == list(COLUMNS)
    assert table.subject_id.tolist() == ["sub-00", "sub-01", "sub-02", "sub-03", "..escape", "sub-05", "sub-06"]
    scored = table[table.error == ""]
    assert len(scored) == 5 and scored.abnormality_index.notna().all()
    assert ((scored.healthy_centile >= 0) & (scored.healthy_centile <= 100)).all()
    assert "NIfTI" in table.error[5] or "nifti" in table.error[5].lower()
    assert "no scan" in table.error[6] and np.isnan(table.abnormality_index[6])
    # a row is what mri-score gives the scan alone with the same seed
    alone = score_scan(tiny_imaging_model, cohort_folder / "t1" / "sub-01_T1w.nii.gz", table.age[1], table.sex[1],
                       register=False, seed=3)
    assert table.abnormality_index[1] == alone.score.index["top1"]
    assert table.healthy_centile_top5[1] == alone.score.centile["top5"]
    # each scan's maps in its own folder, inside the maps folder whatever its id
    for sid, folder in zip(scored.subject_id, scored.maps, strict=True):
        assert Path(folder) == map_folder(tmp_path / "maps", sid)
        assert Path(folder).resolve().parent == (tmp_path / "maps").resolve()
        assert json.loads((Path(folder) / "result.json").read_text())["abnormality_index"]["top1"] == \
            table.set_index("subject_id").abnormality_index[sid]


def test_the_headline_columns_follow_the_models_headline_index(tiny_imaging_model, cohort_folder):
    """``abnormality_index`` / ``healthy_centile`` are the index the model leads with, named beside them."""
    peak_model = copy.copy(tiny_imaging_model)
    peak_model.config = tiny_imaging_model.config.replace(headline_index="peak")
    tables = {m.config.headline_index: score_cohort(m, cohort_folder / "t1", cohort_folder / "participants.csv",
                                                    seed=3, register=False)
              for m in (tiny_imaging_model, peak_model)}
    for headline, table in tables.items():
        scored = table[table.error == ""]
        assert (scored.headline_index == headline).all()
        assert scored.abnormality_index.equals(scored[f"abnormality_index_{headline}"])
        assert scored.healthy_centile.equals(scored[f"healthy_centile_{headline}"])
    assert tables["top1"].abnormality_index_peak.equals(tables["peak"].abnormality_index_peak)  # same scores
    assert (tables["peak"].abnormality_index_peak.dropna() > tables["top1"].abnormality_index.dropna()).all()


def test_brain_age_columns_are_the_models_read_out_and_empty_without_one(tiny_imaging_model, tiny_cohort,
                                                                        cohort_folder):
    plain = score_cohort(tiny_imaging_model, cohort_folder / "t1", cohort_folder / "participants.csv", seed=3,
                         register=False)
    assert plain[["brain_age", "brain_age_gap", "brain_age_gap_centile"]].isna().all().all()
    c, model = tiny_cohort, copy.copy(tiny_imaging_model)
    model.fit_brain_age(c["volumes"][:10], c["ages"][:10], c["volumes"][10:12], c["ages"][10:12])
    table = score_cohort(model, cohort_folder / "t1", cohort_folder / "participants.csv", seed=3, register=False)
    scored = table[table.error == ""]
    assert scored.brain_age.notna().all() and table.brain_age[table.error != ""].isna().all()
    alone = score_scan(model, cohort_folder / "t1" / "sub-01_T1w.nii.gz", table.age[1], table.sex[1],
                       register=False, seed=3)
    assert alone.summary()["brain_age"] == alone.brain_age.to_dict()
    assert table.brain_age_gap[1] == pytest.approx(alone.brain_age.gap_years)
    assert table.brain_age_gap_centile[1] == pytest.approx(100 * alone.brain_age.centile)


def test_band_columns_are_filled_only_when_asked_and_possible(tiny_imaging_model, cohort_folder, monkeypatch):
    plain = score_cohort(tiny_imaging_model, cohort_folder / "t1", cohort_folder / "participants.csv", seed=3,
                         register=False)
    assert plain.healthy_centile_band_low.isna().all() and plain.healthy_centile_band_high.isna().all()
    # these scans are on the model grid already: a band asked for is refused with the reason, row by row
    asked = score_cohort(tiny_imaging_model, cohort_folder / "t1", cohort_folder / "participants.csv", seed=3,
                         register=False, resamplings=2)
    scored = asked[asked.error == ""]
    assert scored.healthy_centile_band_low.isna().all()
    assert scored.warnings.str.contains("no resampling band: its voxels").all()
    # a scan that can be resliced gets its band's ends in the row
    from normcore.imaging import cohort_scores, resampling

    band = resampling.ResamplingBand("top1", [50.0, 20.0, 90.0], [[0.1, 0.1, 0.1]] * 2)
    real = cohort_scores.score_scan

    def banded(*args, **kwargs):
        result = real(*args, **{**kwargs, "resamplings": 0})
        result.band = band
        return result
    monkeypatch.setattr(cohort_scores, "score_scan", banded)
    table = score_cohort(tiny_imaging_model, cohort_folder / "t1", cohort_folder / "participants.csv", seed=3,
                         register=False, resamplings=2)
    scored = table[table.error == ""]
    assert (scored.healthy_centile_band_low == 20.0).all() and (scored.healthy_centile_band_high == 90.0).all()


def test_map_folders_stay_inside_and_never_collide(tmp_path):
    folders = map_folders(tmp_path, ["a/1", "a_1", "../../etc", "..", "b"])
    assert len(set(folders)) == 5 and all(f.parent == tmp_path for f in folders)
    assert [f.name for f in folders] == ["a_1-row1", "a_1-row2", "_.._etc", "_", "b"]


def test_whole_cohort_problems_are_refused(tiny_imaging_model, cohort_folder, tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        score_cohort(tiny_imaging_model, tmp_path / "absent", cohort_folder / "participants.csv")
    dup = pd.read_csv(cohort_folder / "participants.csv")
    pd.concat([dup, dup.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(InputError, match="more than once"):
        score_cohort(tiny_imaging_model, cohort_folder / "t1", tmp_path / "dup.csv")


def test_torchrun_table_equals_one_process(tiny_imaging_model, cohort_folder, tmp_path):
    model_dir = tmp_path / "model"
    tiny_imaging_model.save(model_dir)
    common = ["mri-cohort", str(model_dir), "--images", str(cohort_folder / "t1"), "--participants",
              str(cohort_folder / "participants.csv"), "--no-register", "--seed", "4", "--threads", "1", "--device",
              "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, "-m", "normcore", *common, "--out", str(tmp_path / "one.csv")],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-2000:]
    assert "scored 5 of 7 scans" in one.stdout and "warning: sub-06: not scored" in one.stdout
    only_bad = tmp_path / "bad.csv"
    pd.read_csv(cohort_folder / "participants.csv").iloc[5:].to_csv(only_bad, index=False)
    none = subprocess.run([sys.executable, "-m", "normcore", *common[:5], str(only_bad), *common[6:], "--out",
                           str(tmp_path / "none.csv")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert none.returncode == 0 and "scored 0 of 2 scans" in none.stdout and "nan" not in none.stdout
    assert pd.read_csv(tmp_path / "none.csv").error.notna().all()
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "normcore", *common, "--out", str(tmp_path / "two.csv")],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "two.csv")
    assert a.abnormality_index.notna().sum() == 5
    pd.testing.assert_frame_equal(a, b, check_exact=True)
