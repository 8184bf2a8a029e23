"""Cohort reports: the AUC against hand-computed values, renderings, the command."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from normcore import InputError, make_model, make_synthetic
from normcore.cli.main import main
from normcore.metrics import cohen_d
from normcore.reports import cohort_report, render_cohort
from normcore.reports.cohort import auc_hanley_mcneil
from normcore.reports.render import COHORT_PDF_PAGES


@pytest.fixture(scope="module")
def scored():
    df, truth = make_synthetic(400, d=4, patients=60, seed=9)
    controls = df[df.group == "control"]
    model = make_model("shash-baseline").fit(controls.head(300), age="age", covariates=["sex"],
                                             idps=truth.idp_names)
    return model, model.score(df.iloc[300:].reset_index(drop=True))


def test_auc_matches_hand_computation():
    rng = np.random.default_rng(0)
    p, c = rng.normal(-1.0, 1.0, 50), rng.normal(0.0, 1.0, 80)
    auc, a_lo, a_hi = auc_hanley_mcneil(p, c)
    assert auc == pytest.approx(roc_auc_score(np.r_[np.ones(50), np.zeros(80)], np.r_[p, c]))
    assert a_lo < auc < a_hi and auc < 0.5  # patients lower: below 0.5


def test_the_cohort_report_and_its_renderings(scored):
    model, scores = scored
    report = cohort_report(model, scores, "group", "control", id_col="sub_id")
    assert dict(zip(report.groups.group, report.groups.n, strict=True)) == {
        g: n for g, n in scores.group.value_counts().items()}
    row = report.per_idp.set_index("idp").loc["idp_01"]
    patients = (scores.group != "control").to_numpy()
    z = scores["z:idp_01"].to_numpy()
    assert row.cohen_d == pytest.approx(cohen_d(z[patients], z[~patients])[0])
    assert row.extreme_patients == pytest.approx((np.abs(z[patients]) > 1.959964).mean())
    assert report.per_subject.n_extreme.is_monotonic_decreasing
    n_extreme = dict(zip(scores.sub_id.astype(str), (np.abs(scores.filter(like="z:").to_numpy()) > 1.959964).sum(1),
                         strict=True))
    assert len(n_extreme) == len(scores) and all(
        n_extreme[s] == n for s, n in zip(report.per_subject.subject, report.per_subject.n_extreme, strict=True))
    text, pdf = render_cohort(report)
    assert "Cohort deviation report" in text and not re.search(r"(src|href)=\"(https?:)?//", text)
    assert pdf.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == COHORT_PDF_PAGES


def test_the_cohort_report_command(scored, tmp_path, capsys):
    model, scores = scored
    model.save(tmp_path / "m")
    scores.to_csv(tmp_path / "s.csv", index=False)
    rc = main(["report", str(tmp_path / "m"), str(tmp_path / "s.csv"), "--cohort", "--group-col", "group",
               "--id-col", "sub_id", "--out", str(tmp_path / "cohort.html")])
    assert rc == 0 and "cohort report" in capsys.readouterr().out
    assert "<table>" in (tmp_path / "cohort.html").read_text()
    rc = main(["report", str(tmp_path / "m"), str(tmp_path / "s.csv"), "--cohort", "--out", str(tmp_path / "c.pdf")])
    assert rc == 2 and "--group-col" in capsys.readouterr().err
    only_controls = scores[scores.group == "control"]
    with pytest.raises(InputError, match="needs controls"):
        cohort_report(model, only_controls, "group")


def test_without_an_id_column_subjects_are_row_numbers_and_a_missing_one_is_refused(scored):
    model, scores = scored
    report = cohort_report(model, scores, "group", "control")
    assert "subject" not in report.per_subject and list(report.per_subject.columns[:2]) == ["row", "group"]
    n_extreme = (np.abs(scores.filter(like="z:").to_numpy()) > 1.959964).sum(1)
    assert (report.per_subject.n_extreme.to_numpy() == n_extreme[report.per_subject.row.to_numpy()]).all()
    assert "<th>row</th>" in render_cohort(report)[0]
    with pytest.raises(InputError, match="subject_id"):
        cohort_report(model, scores, "group", "control", id_col="subject_id")


def test_a_value_most_of_the_reference_shares_is_never_counted_extreme(censored_cohort):
    """Healthy zeros of a measure 0 for 80-95% of people get random z, some beyond 1.96: the counts leave them out,
    while a present value beyond 1.96 still counts."""
    from normcore import make_model

    model = make_model("shash-baseline").fit(censored_cohort(1500, 0), "age", ["sex"], ["absent", "normal"])
    scores = model.score(censored_cohort(400, 1).assign(group=["patient", "control"] * 200), seed=0)
    report = cohort_report(model, scores, "group", "control")
    zero, z = scores.absent.to_numpy() == 0, scores["z:absent"].to_numpy()
    assert (np.abs(z[zero]) > 1.96).sum() > 0  # the random z of some zeros lie beyond 1.96 ...
    row = report.per_idp.set_index("idp").loc["absent"]
    present_extreme = (np.abs(z) > 1.96) & ~zero
    is_control = (scores.group == "control").to_numpy()
    assert row.extreme_controls == pytest.approx(present_extreme[is_control].mean())  # ... and are not counted
    assert row.extreme_patients == pytest.approx(present_extreme[~is_control].mean()) and row.extreme_patients > 0
