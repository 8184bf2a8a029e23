"""Subject reports: content for a known subject, colour bands at their edges, self-contained HTML, valid PDF."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest

from normcore import InputError, make_model, make_synthetic
from normcore.cli.main import main
from normcore.plotting.centile_bands import BAND_COLOURS
from normcore.reports import centile_band, subject_report, to_html, to_pdf_bytes
from normcore.reports.render import PDF_PAGES, multivariate_line
from normcore.tabular.anatomy import anatomical_group, group_order
from normcore.tabular.multivariate_calibration import MultivariateCalibration


@pytest.fixture(scope="module")
def scored():
    df, truth = make_synthetic(400, d=6, seed=7, n_sites=2)
    model = make_model("shash-baseline").fit(df, age="age", covariates=["sex", "site"], idps=truth.idp_names)
    subject = df.iloc[[5]].copy()
    subject["idp_03"] = model.predict_quantiles(subject, (0.001,))[0, 0, 2]  # far below: the most deviant
    subject["idp_05"] = model.predict_quantiles(subject, (0.97,))[0, 0, 4]  # high, second
    subject["sub_id"] = "patient-1"
    table = pd.concat([df.head(20), subject], ignore_index=True)
    return model, model.score(table)


def test_colour_bands_at_their_edges():
    assert [centile_band(c) for c in (0.0, 0.00999, 0.01, 0.04999, 0.05, 0.5, 0.95, 0.95001, 0.99, 0.99001, 1.0)] \
        == ["below 1st", "below 1st", "1st-5th", "1st-5th", "5th-95th", "5th-95th", "5th-95th", "95th-99th",
            "95th-99th", "above 99th", "above 99th"]
    assert centile_band(np.nan) == "missing"
    assert BAND_COLOURS["5th-95th"] == "#BDBDBD" and BAND_COLOURS["below 1st"] == "#2166AC"


def test_the_report_lists_the_most_deviant_idps_in_order_in_original_units(scored):
    model, scores = scored
    report = subject_report(model, scores, "patient-1", id_col="sub_id", n_top=3)
    assert list(report.top.idp[:2]) == ["idp_03", "idp_05"]
    row = scores[scores.sub_id == "patient-1"].iloc[0]
    assert report.top.value[0] == pytest.approx(row["idp_03"])  # the IDP's own units
    assert report.top.centile[0] == pytest.approx(row["centile:idp_03"]) and report.top.z[0] < -2.5
    assert report.top.expected_5th[0] > row["idp_03"]  # below the expected range
    assert row["idp_05"] > report.top.expected_95th[1]  # at the 97th centile: above the 5th-95th range
    assert set(report.profile.band) <= set(BAND_COLOURS) and len(report.profile) == 6
    assert report.header["Subject"] == "patient-1" and "shash-baseline" in report.header["Model"]
    assert set(report.curves.idp) == set(report.top.idp)  # curve panels of the (here 3) most deviant IDPs
    assert report.multivariate["n_idps"] == 6 and 0 <= report.multivariate["centile"] <= 100


def test_a_value_most_of_the_reference_shares_is_flagged_not_ranked(scored, monkeypatch):
    """A value at a point mass most of the reference has (say 0 for a structure most brains lack) gets a random
    centile within that share: it is named in the flags and left out of the most deviant IDPs; a point mass few
    share (a rare 0) keeps its rank."""
    model, scores = scored
    value = float(scores.loc[scores.sub_id == "patient-1", "idp_03"].iloc[0])
    masses = [("idp_03", "floor", value, 0.9)]
    monkeypatch.setattr(type(model), "point_masses_", property(lambda self: masses))
    report = subject_report(model, scores, "patient-1", id_col="sub_id", n_top=3)
    assert "idp_03" not in set(report.top.idp) and report.top.idp[0] == "idp_05"
    assert any(f.startswith("1 IDP value(s) sit at a value most of the reference shares: idp_03 = ") and "(90% of"
               in f for f in report.flags)
    masses[0] = ("idp_03", "floor", value, 0.03)
    rare = subject_report(model, scores, "patient-1", id_col="sub_id", n_top=3)
    assert rare.top.idp[0] == "idp_03" and not any("most of the reference shares" in f for f in rare.flags)


def test_the_multivariate_score_is_ranked_among_the_cards_held_out_healthy_people(scored):
    model, scores = scored
    d2 = float(scores[scores.sub_id == "patient-1"].multivariate_d2.iloc[0])
    plain = subject_report(model, scores, "patient-1", id_col="sub_id")
    assert "held_out_n" not in plain.multivariate and "held-out" not in multivariate_line(plain)
    ranked = copy.deepcopy(model)
    ranked.info_ = {"held_out": {"multivariate_d2": [d2 - 2, d2 - 1, d2, d2 + 1], "multivariate_n_idps": 6}}
    report = subject_report(ranked, scores, "patient-1", id_col="sub_id")
    assert report.multivariate["held_out_centile"] == pytest.approx(62.5)  # 2 below, 1 tie (half) of 4
    assert "above 62% of the reference's 4 held-out healthy people" in multivariate_line(report)
    ranked.info_["held_out"]["multivariate_n_idps"] = 208  # d2 over another number of IDPs: not comparable
    assert "held_out_n" not in subject_report(ranked, scores, "patient-1", id_col="sub_id").multivariate


def test_a_calibrated_multivariate_centile_says_it_is_among_new_healthy_people(scored):
    model, scores = scored
    line = multivariate_line(subject_report(model, scores, "patient-1", id_col="sub_id"))
    assert "among new healthy people, calibrated on its 400 training subjects, cross-fitted" in line
    uncalibrated = copy.deepcopy(model)
    uncalibrated.multivariate_calibration_ = None  # as a model saved before its fit calibrated the score
    assert "under the model" in multivariate_line(subject_report(uncalibrated, scores, "patient-1", id_col="sub_id"))
    calibrated = copy.deepcopy(model)
    calibrated.multivariate_calibration_ = MultivariateCalibration(scale=2.0, dof=3.0, n_idps=6, n_rows=86,
                                                                   n_samples=1000, mean_d2=6.0, mean_d2_half=5.5)
    line = multivariate_line(subject_report(calibrated, scores, "patient-1", id_col="sub_id"))
    assert "among new healthy people, calibrated on the fit's 86 validation subjects" in line
    assert "under the model" not in line


def test_html_is_self_contained_and_the_pdf_is_valid(scored):
    model, scores = scored
    report = subject_report(model, scores, "patient-1", id_col="sub_id")
    text = to_html(report)
    assert "patient-1" in text and "Research use only" in text and text.count("data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing is fetched from anywhere
    pdf = to_pdf_bytes(report)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == PDF_PAGES


def test_the_report_command(scored, tmp_path, capsys):
    model, scores = scored
    model.save(tmp_path / "m")
    scores.to_csv(tmp_path / "scores.csv", index=False)
    for suffix in ("html", "pdf"):
        rc = main(["report", str(tmp_path / "m"), str(tmp_path / "scores.csv"), "--subject", "patient-1", "--id-col",
                   "sub_id", "--out", str(tmp_path / f"r.{suffix}")])
        assert rc == 0 and "most deviant idp_03" in capsys.readouterr().out
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")
    rc = main(["report", str(tmp_path / "m"), str(tmp_path / "scores.csv"), "--subject", "nobody", "--id-col",
               "sub_id", "--out", str(tmp_path / "x.pdf")])
    assert rc == 2 and "no subject 'nobody'" in capsys.readouterr().err
    rc = main(["report", str(tmp_path / "m"), str(tmp_path / "scores.csv"), "--subject", "0", "--out",
               str(tmp_path / "x.docx")])
    assert rc == 2 and ".html or .pdf" in capsys.readouterr().err


def test_freesurfer_names_are_grouped_anatomically():
    assert anatomical_group("lh_G_front_sup_thickness") == "Cortical thickness, frontal, left"
    assert anatomical_group("rh_G_temp_sup-Lateral_thickness") == "Cortical thickness, temporal, right"
    assert anatomical_group("Left-Hippocampus") == "Subcortical grey matter"
    assert anatomical_group("3rd-Ventricle") == "Ventricles and CSF"
    assert anatomical_group("eTIV") == "Global measures" and anatomical_group("lh_MeanThickness_thickness") == \
        "Global measures"
    assert anatomical_group("CC_Anterior") == "White matter and corpus callosum"
    assert anatomical_group("idp_01") == "Other"
    groups = [g for g, _ in group_order(["Left-Hippocampus", "eTIV", "lh_G_cuneus_thickness"])]
    assert groups == ["Cortical thickness, occipital, left", "Subcortical grey matter", "Global measures"]


def test_a_report_needs_a_subject_or_a_cohort(scored, tmp_path, capsys):
    model, scores = scored
    model.save(tmp_path / "m")
    scores.to_csv(tmp_path / "scores.csv", index=False)
    rc = main(["report", str(tmp_path / "m"), str(tmp_path / "scores.csv"), "--out", str(tmp_path / "x.pdf")])
    assert rc == 2 and "either --subject" in capsys.readouterr().err


def test_every_pdf_page_draws(scored):
    """The PDF rendered back to pixels: each page has content (not blank), the first page in the test output."""
    pdfium = pytest.importorskip("pypdfium2", reason="pypdfium2 not installed (requirements-dev.txt)")
    from tests.conftest import ROOT

    model, scores = scored
    pdf = pdfium.PdfDocument(to_pdf_bytes(subject_report(model, scores, "patient-1", id_col="sub_id")))
    assert len(pdf) == PDF_PAGES
    out = ROOT / "test-output" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(len(pdf)):
        image = pdf[i].render(scale=1.2).to_pil()
        pixels = np.asarray(image.convert("L"))
        assert (pixels < 200).mean() > 0.01, f"page {i + 1} is blank"
        if i == 0:
            image.save(out / "report_pdf_page1.png")


@pytest.mark.parametrize("module", ["normcore.plotting.report", "normcore.reports.render", "normcore.reports"])
def test_report_modules_import_on_their_own(module):
    """Bug: importing the figure module first ran into a circular import with normcore.reports."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


def test_an_unmeasured_idp_is_named_not_ranked_and_ages_read_to_a_tenth(scored):
    model, scores = scored
    table = scores.copy()
    row = table.index[table.sub_id == "patient-1"][0]
    table.loc[row, ["idp_05", "z:idp_05", "centile:idp_05"]] = np.nan  # a region that failed quality control
    table.loc[row, "age"] = 45.113942
    report = subject_report(model, table, "patient-1", id_col="sub_id", n_top=6)
    assert "idp_05" not in set(report.top.idp) and report.top.z.notna().all() and len(report.top) == 5
    assert report.multivariate["n_idps"] == 5
    assert any("have no value for this subject and are not scored: idp_05" in f for f in report.flags)
    assert report.header["Age"] == "45.1 years" and re.search(r"aged \d+(\.\d)?-\d+(\.\d)?$", report.header["Model"])
    table.loc[row, [c for c in table.columns if c.startswith(("z:", "centile:"))]] = np.nan
    with pytest.raises(InputError, match="no scored IDP value"):
        subject_report(model, table, "patient-1", id_col="sub_id")
