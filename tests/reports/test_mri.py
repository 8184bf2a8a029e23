"""The MRI part of subject reports: the most anomalous region, slices at the scan's own resolution and orientation,
an mri-score folder read back, MRI-only and combined reports in HTML and PDF, and the CLI."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from normcore._utils.errors import InputError
from normcore.cli.main import main
from normcore.reports import render, subject_report, to_html, to_pdf_bytes
from normcore.reports.mri import Z_THRESHOLD, findings, findings_from_folder
from normcore.reports.render import PDF_PAGES, pdf_page_count
from normcore.reports.subject import mri_subject_report
from tests.reports.test_subject import scored  # noqa: F401  (the module fixture: a fitted model and its scores)

SHAPE = (40, 48, 30)
ZOOMS = (1.0, 1.0, 2.0)  # anisotropic: slices must keep their true aspect
CLUSTER = (12, 30, 20)  # voxel (canonical, RAS) of the injected cluster of high z


def _scan_and_zmap(flip: bool = False) -> tuple[nib.Nifti1Image, nib.Nifti1Image, np.ndarray]:
    """A synthetic scan and its z-map: noise z everywhere in an ellipsoid brain, one cluster of z = 6 around
    CLUSTER and one isolated voxel of z = 40 elsewhere (a single extreme voxel is not a region)."""
    rng = np.random.default_rng(0)
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1) / 2
    brain = (((grid - centre[:, None, None, None]) / (centre[:, None, None, None] * 0.9)) ** 2).sum(0) <= 1
    scan = np.where(brain, 100 + 10 * rng.standard_normal(SHAPE), 0).astype(np.float32)
    z = np.where(brain, rng.standard_normal(SHAPE), 0).astype(np.float32)
    x, y, s = CLUSTER
    z[x - 2:x + 3, y - 2:y + 3, s - 1:s + 2] = 6.0
    z[30, 12, 10] = 40.0
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = [-20, -24, -30]
    if flip:  # stored LPS (x and y reversed): the report must show it the same way as the RAS copy
        flip_affine = affine.copy()
        flip_affine[0, 0], flip_affine[1, 1] = -ZOOMS[0], -ZOOMS[1]
        flip_affine[:2, 3] = affine[:2, 3] + (np.array(SHAPE[:2]) - 1) * np.array(ZOOMS[:2])
        return (nib.Nifti1Image(scan[::-1, ::-1], flip_affine), nib.Nifti1Image(z[::-1, ::-1], flip_affine),
                brain[::-1, ::-1])
    return nib.Nifti1Image(scan, affine), nib.Nifti1Image(z, affine), brain


SUMMARY = {"scan": "scan.nii.gz", "method": "kl-inpaint", "abnormality_index": {"top1": 5.5, "top5": 3.1},
           "healthy_centile": {"top1": 97.0, "top5": 91.0}, "healthy_reference_n": 99,
           "warnings": ["the brain mask covers only 60% of the template brain"]}


@pytest.mark.parametrize("flip", [False, True])
def test_slices_go_through_the_cluster_at_the_scan_resolution(flip):
    scan, zmap, _ = _scan_and_zmap(flip)
    f = findings(scan, zmap, SUMMARY)
    ras = np.diag([*ZOOMS, 1.0])
    ras[:3, 3] = [-20, -24, -30]
    expected_mm = (ras @ np.append(CLUSTER, 1.0))[:3]
    assert np.allclose(f.centre_mm, expected_mm, atol=2 * max(ZOOMS))  # the cluster, not the single z = 40 voxel
    grey, z, aspect = f.planes["axial"]
    assert grey.shape == (SHAPE[1], SHAPE[0]) and z.shape == grey.shape  # the scan's own voxels, RAS rows/columns
    assert f.planes["coronal"][0].shape == (SHAPE[2], SHAPE[0]) and f.planes["coronal"][2] == pytest.approx(2.0)
    assert f.planes["sagittal"][0].shape == (SHAPE[2], SHAPE[1])
    assert 0 <= grey.min() and grey.max() <= 1 and (z >= Z_THRESHOLD).sum() >= 9
    assert 0 < f.share_above < 0.05
    assert "99 healthy reference scans (steps of 1.0 centile points)" in f.index_line()
    assert f.index_line().startswith("Abnormality index (mean z of the brain's most abnormal voxels, top 1%) 5.50")
    led = findings(scan, zmap, {**SUMMARY, "headline_index": "peak",
                                "abnormality_index": {**SUMMARY["abnormality_index"], "peak": 8.25},
                                "healthy_centile": {**SUMMARY["healthy_centile"], "peak": 99.5}})
    assert led.index_line().startswith("Abnormality index (mean z of the brain's most abnormal voxels, peak: top "
                                       "0.05%) 8.25: centile 100 among 99")
    assert "top 1%: 5.50, centile 97" in led.index_line()


def test_the_index_line_says_how_far_a_reslice_moves_the_centile_when_it_was_measured():
    scan, zmap, _ = _scan_and_zmap(False)
    assert "Reslicing" not in findings(scan, zmap, SUMMARY).index_line()  # not measured: nothing claimed
    measured = findings(scan, zmap, {**SUMMARY, "healthy_centile_reproducibility": 26.3}).index_line()
    assert measured.endswith("Reslicing a healthy scan by a quarter voxel moved this centile by 26 points on "
                             "average.")
    smoothed = findings(scan, zmap, {**SUMMARY, "healthy_centile_reproducibility": 7.9,
                                     "healthy_centile_smoothing_shift": 26.3}).index_line()
    assert smoothed.endswith("Reslicing a healthy scan by a quarter voxel moved this centile by 8 points on average, "
                             "smoothing it slightly (a trilinear reslice) by 26: the index follows how smooth a scan "
                             "is.")
    band = {"index": "top1", "low": 41.2, "high": 83.0, "centiles": [60.0, 41.2, 83.0], "n_resamplings": 2}
    banded = findings(scan, zmap, {**SUMMARY, "healthy_centile_band": band}).index_line()
    assert banded.endswith("Resliced 2 times by a fraction of a voxel, this scan's centile ranged 41-83.")


def test_the_share_line_adds_the_brain_age_when_the_result_has_one():
    scan, zmap, _ = _scan_and_zmap(False)
    assert "brain age" not in findings(scan, zmap, SUMMARY).share_line().lower()
    brain_age = {"predicted_age": 71.6, "gap_years": 9.24, "raw_gap_years": 6.6, "z": 1.3, "centile": 0.91,
                 "n_reference": 116, "reference_mae_years": 8.45}
    line = findings(scan, zmap, {**SUMMARY, "brain_age": brain_age}).share_line()
    assert line.endswith("Brain age 72 y: looks 9.2 y older than healthy people of the same age (centile 91 among "
                         "116 healthy scans; the read-out's error on them is 8.4 y on average).")


def test_a_flipped_scan_is_shown_like_its_ras_copy():
    a = findings(*_scan_and_zmap(False)[:2], SUMMARY)
    b = findings(*_scan_and_zmap(True)[:2], SUMMARY)
    for axis in a.planes:
        assert np.allclose(a.planes[axis][1], b.planes[axis][1])


def test_a_zmap_on_another_grid_is_refused():
    scan, zmap, _ = _scan_and_zmap()
    other = nib.Nifti1Image(np.asarray(zmap.dataobj)[:-2], zmap.affine)
    with pytest.raises(InputError, match="not on the same voxel grid"):
        findings(scan, other, SUMMARY)


@pytest.fixture
def result_folder(tmp_path):
    """An mri-score --out folder (result.json, zmap and restoration in the scan's space) and the scan."""
    scan, zmap, _ = _scan_and_zmap()
    nib.save(scan, tmp_path / "scan.nii.gz")
    out = tmp_path / "mri"
    out.mkdir()
    nib.save(zmap, out / "zmap.nii.gz")
    nib.save(scan, out / "restoration.nii.gz")
    (out / "result.json").write_text(json.dumps({**SUMMARY, "scan": str(tmp_path / "scan.nii.gz")}))
    return out


def test_a_folder_is_read_with_the_scan_it_names_or_its_restoration(result_folder, tmp_path):
    assert findings_from_folder(result_folder).background == "scan"
    (tmp_path / "scan.nii.gz").unlink()
    f = findings_from_folder(result_folder)
    assert f.background == "restoration" and np.allclose(f.centre_mm, findings_from_folder(result_folder).centre_mm)
    with pytest.raises(InputError, match="file not found"):
        findings_from_folder(result_folder, tmp_path / "gone.nii.gz")
    with pytest.raises(InputError, match="not an mri-score result folder"):
        findings_from_folder(tmp_path)


def test_an_mri_only_report_has_one_pdf_page_and_the_index(result_folder):
    f = findings_from_folder(result_folder)
    report = mri_subject_report(f, 63, "F", "mri-model", 99, (20, 86))
    assert not report.has_idps and pdf_page_count(report) == 1
    html_text, pdf = render(report)
    assert html_text.count("data:image/png;base64,") == 1 and "centile 97 among 99 healthy" in html_text
    assert "MRI: the brain mask covers only 60%" in html_text  # quality warnings are flags
    assert not re.search(r"(src|href)=\"(https?:)?//", html_text)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1


def test_a_subject_report_with_a_scan_adds_a_page(scored, result_folder):  # noqa: F811
    model, scores = scored
    report = subject_report(model, scores, "patient-1", id_col="sub_id", mri=findings_from_folder(result_folder))
    assert report.has_idps and pdf_page_count(report) == PDF_PAGES + 1
    assert report.header["MRI scan"].endswith("scan.nii.gz")
    assert to_html(report).count("data:image/png;base64,") == 3
    assert len(re.findall(rb"/Type\s*/Page[^s]", to_pdf_bytes(report))) == PDF_PAGES + 1


def test_the_report_command_takes_an_mri_folder(scored, result_folder, tmp_path, capsys):  # noqa: F811
    model, scores = scored
    model.save(tmp_path / "m")
    scores.to_csv(tmp_path / "scores.csv", index=False)
    args = ["report", str(tmp_path / "m"), str(tmp_path / "scores.csv"), "--subject", "patient-1", "--id-col",
            "sub_id", "--out", str(tmp_path / "r.html")]
    assert main([*args, "--mri", str(result_folder)]) == 0
    assert "centile 97 among 99 healthy" in (tmp_path / "r.html").read_text()
    assert main([*args, "--mri-scan", str(tmp_path / "scan.nii.gz")]) == 2
    assert "--mri-scan needs --mri" in capsys.readouterr().err
    assert main([*args, "--mri", str(tmp_path)]) == 2
    assert "not an mri-score result folder" in capsys.readouterr().err


def test_the_slices_figure_clips_the_z_scale_and_hides_z_below_the_threshold():
    from normcore.plotting.report import mri_figure
    from normcore.reports.mri import Z_DISPLAY_MAX

    f = findings(*_scan_and_zmap()[:2], SUMMARY)
    fig = mri_figure(f)
    overlays = [ax.get_images()[1] for ax in fig.axes[:3]]
    for image, (axis, (_, z, aspect)) in zip(overlays, f.planes.items(), strict=True):
        assert image.get_clim() == (Z_THRESHOLD, Z_DISPLAY_MAX)  # z = 40 does not stretch the scale
        shown = image.get_array()
        assert shown.mask[z < Z_THRESHOLD].all() and not shown.mask[z >= Z_THRESHOLD].any()
        assert fig.axes[list(f.planes).index(axis)].get_aspect() == pytest.approx(aspect)
