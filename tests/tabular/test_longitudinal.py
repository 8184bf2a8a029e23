"""Longitudinal change scores on a synthetic cohort with a known visit-to-visit correlation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special

from normcore import InputError, make_model
from normcore.tabular.longitudinal import change_scores
from normcore.tabular.synthetic import SyntheticTruth

RHO = 0.8


@pytest.fixture(scope="module")
def world():
    """A reference fitted on cross-sectional controls, and a cohort with two visits two years apart: 400
    controls whose latent z correlate with RHO between visits, 60 patients losing 2 SD of change in idp_01."""
    truth = SyntheticTruth.create(d=3, seed=21)
    reference = make_model("shash-baseline").fit(truth.sample(4000, seed=22), age="age", covariates=["sex"],
                                                 idps=truth.idp_names)
    rng = np.random.default_rng(23)
    n_c, n_p = 400, 60
    n = n_c + n_p
    age = rng.uniform(25, 70, n)
    sex = rng.integers(0, 2, n)
    z1 = rng.standard_normal((n, 3))
    z2 = RHO * z1 + np.sqrt(1 - RHO**2) * rng.standard_normal((n, 3))
    z2[n_c:, 0] -= 2.0 * np.sqrt(2 * (1 - RHO))  # patients: a change of -2 in change-score units
    rows = []
    for visit, z, a in ((1, z1, age), (2, z2, age + 2.0)):
        values = {name: truth.quantile(special.ndtr(z[:, j]), a, sex, j) for j, name in enumerate(truth.idp_names)}
        rows.append(pd.DataFrame({"sub_id": [f"s{i:03d}" for i in range(n)], "visit": visit, "age": a,
                                  "sex": sex, "group": ["control"] * n_c + ["patient"] * n_p, **values}))
    return truth, reference, pd.concat(rows, ignore_index=True).sample(frac=1.0, random_state=1)


def test_change_scores_of_controls_are_standard_normal_and_a_real_change_is_found(world):
    truth, reference, cohort = world
    result = change_scores(reference, cohort, "sub_id", "visit", group_col="group")
    table = result.table
    assert len(table) == 460 and set(table.visit_from) == {1} and set(table.visit_to) == {2}
    assert "estimated from 400 pairs" in result.rho_source
    assert all(abs(r - RHO) < 0.08 for r in result.rho.values()), result.rho
    controls = table.sub_id.isin([f"s{i:03d}" for i in range(400)]).to_numpy()
    zc = table.loc[controls, [f"zchange:{c}" for c in truth.idp_names]].to_numpy()
    coverage = (np.abs(zc) < 1.96).mean()
    assert 0.93 <= coverage <= 0.97, coverage
    assert abs(zc.mean()) < 0.1 and abs(zc.std() - 1) < 0.1
    patients = table.loc[~controls, "zchange:idp_01"]
    assert patients.mean() < -1.5 and (patients < -1.96).mean() > 0.25  # found (controls: ~0.025)
    assert table.loc[~controls, "zchange:idp_02"].abs().mean() < 1.0  # ... and only where it was injected
    assert table.loc[~controls, "multivariate_change"].mean() > table.loc[controls, "multivariate_change"].mean() + 0.5
    assert list(table.columns[:3]) == ["sub_id", "visit_from", "visit_to"]
    assert list(table.columns[3:9]) == [f"{k}:{c}" for c in truth.idp_names for k in ("dz", "zchange")]
    assert table.columns[9] == "multivariate_change"


def test_without_control_pairs_the_correlation_must_be_supplied(world):
    _, reference, cohort = world
    patients = cohort[cohort.group == "patient"]
    with pytest.raises(InputError, match="supply the correlation"):
        change_scores(reference, patients, "sub_id", "visit", group_col="group")
    result = change_scores(reference, patients, "sub_id", "visit", group_col="group", rho=RHO)
    assert result.rho_source == "supplied" and result.table["zchange:idp_01"].mean() < -1.5
    with pytest.raises(InputError, match="within 0-0.99"):
        change_scores(reference, patients, "sub_id", "visit", group_col="group", rho=1.0)


def test_bad_longitudinal_tables_get_messages(world):
    _, reference, cohort = world
    with pytest.raises(InputError, match="visit column 'when' not found"):
        change_scores(reference, cohort, "sub_id", "when")
    with pytest.raises(InputError, match="no subject has two visits"):
        change_scores(reference, cohort[cohort.visit == 1], "sub_id", "visit", rho=0.5)
    twice = pd.concat([cohort, cohort.head(1)])
    with pytest.raises(InputError, match=r"has visit 1 twice"):  # the visit as written, not np.int64(1)
        change_scores(reference, twice, "sub_id", "visit", rho=0.5)
    backwards = cohort.copy()
    backwards.loc[backwards.visit == 2, "visit"] = 0  # the follow-up labelled as the earlier visit
    with pytest.raises(InputError, match=r"younger at visit 1 \(age [0-9.]+\) than at the visit before it, 0 .*"
                                         r"disagree \(460 pair\(s\)\)"):
        change_scores(reference, backwards, "sub_id", "visit", rho=0.5)


def test_visit_labels_are_ordered_with_their_numbers_read_as_numbers(world):
    _, reference, cohort = world
    labelled = cohort.assign(visit=cohort.visit.map({1: "ses-9", 2: "ses-10"}))  # as text, ses-10 < ses-9
    numbered = change_scores(reference, cohort, "sub_id", "visit", rho=0.5).table
    result = change_scores(reference, labelled, "sub_id", "visit", rho=0.5).table
    assert set(result.visit_from) == {"ses-9"} and set(result.visit_to) == {"ses-10"}
    assert np.array_equal(result.filter(like="zchange:").to_numpy(), numbered.filter(like="zchange:").to_numpy())


def test_the_change_command(world, tmp_path, capsys):
    from normcore.cli.main import main

    truth, reference, cohort = world
    reference.save(tmp_path / "ref")
    cohort.to_csv(tmp_path / "visits.csv", index=False)
    rc = main(["change", str(tmp_path / "ref"), str(tmp_path / "visits.csv"), "--id-col", "sub_id", "--visit-col",
               "visit", "--group-col", "group", "--out", str(tmp_path / "change.csv"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "460 pairs of consecutive visits of 460 subjects" in out and "estimated from 400" in out
    table = pd.read_csv(tmp_path / "change.csv")
    assert list(table.columns[:4]) == ["sub_id", "visit_from", "visit_to", "dz:idp_01"]
    rc = main(["change", str(tmp_path / "ref"), str(tmp_path / "visits.csv"), "--id-col", "sub_id", "--visit-col",
               "visit", "--rho", "{bad", "--out", str(tmp_path / "c2.csv")])
    assert rc == 2 and "--rho" in capsys.readouterr().err
