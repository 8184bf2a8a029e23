"""Matching a user's columns and level codes to a model's."""

from __future__ import annotations

import pandas as pd

from normcore.tabular.column_matching import (
    AGE_NAMES,
    GROUP_NAMES,
    ID_NAMES,
    VISIT_NAMES,
    guess_column,
    guess_covariate_column,
    guess_usual_covariates,
    match_columns,
    match_levels,
    normalise_name,
)


def test_freesurfer_name_variants_match():
    model = ["lh_G&S_frontomargin_thickness", "Left-Hippocampus", "3rd-Ventricle", "eTIV"]
    table = ["subject", "lh_G_and_S_frontomargin", "left_hippocampus", "3rd_Ventricle", "ETIV", "other"]
    assert match_columns(table, model) == {"lh_G&S_frontomargin_thickness": "lh_G_and_S_frontomargin",
                                           "Left-Hippocampus": "left_hippocampus", "3rd-Ventricle": "3rd_Ventricle",
                                           "eTIV": "ETIV"}
    assert normalise_name("lh_G&S_frontomargin_thickness") == "lhgandsfrontomarginthickness"


def test_exact_names_win_and_ambiguous_ones_stay_unmatched():
    assert match_columns(["Left-Hippocampus", "left_hippocampus"], ["Left-Hippocampus"]) == \
        {"Left-Hippocampus": "Left-Hippocampus"}
    assert match_columns(["left_hippocampus", "Left Hippocampus"], ["Left-Hippocampus"]) == {}


def test_sex_words_map_through_the_cards_coding():
    values = pd.Series(["F", "M", "female", "x", None])
    assert match_levels(values, ["0", "1"], {"0": "female", "1": "male"}) == \
        {"F": "0", "M": "1", "female": "0", "x": None}
    assert match_levels(pd.Series([0, 1, 1]), ["0", "1"]) == {"0": "0", "1": "1"}


def test_id_and_group_columns_are_guessed():
    assert guess_column(["age", "Sub_ID", "group"], ("sub_id", "subject_id")) == "Sub_ID"
    assert guess_column(["age", "Time-Point"], VISIT_NAMES) == "Time-Point"  # names compared after normalisation
    assert guess_column(["Visit_Number", "session"], VISIT_NAMES) == "session"  # in the names' order of preference
    assert guess_column(["age", "sex"], ("group",)) is None
    abide_abcd = ["SUB_ID", "SITE_ID", "interview_age", "SEX", "DX_GROUP"]  # ABIDE's and the NIMH Data Archive's names
    assert [guess_column(abide_abcd, names) for names in (ID_NAMES, AGE_NAMES, GROUP_NAMES)] == \
        ["SUB_ID", "interview_age", "DX_GROUP"]


def test_covariate_columns_are_guessed_by_other_names_or_by_their_values():
    coding = {"0": "female", "1": "male"}
    table = pd.DataFrame({"participant_id": ["a", "b", "c"], "Age": [30, 40, 50], "Gender": ["F", "M", "M"],
                          "Scanner": ["x", "x", "y"]})
    assert guess_covariate_column(table, "sex", ["0", "1"], coding) == "Gender"
    assert guess_covariate_column(table, "site") == "Scanner"  # a new site's levels: by name only
    by_values = table.rename(columns={"Gender": "S", "Scanner": "where"})
    assert guess_covariate_column(by_values, "sex", ["0", "1"], coding) == "S"  # every value maps to a level
    assert guess_covariate_column(by_values, "site") is None
    # an ID column never passes for sex, and a column left out (the age) is not read
    assert guess_covariate_column(by_values.drop(columns="S"), "sex", ["0", "1"], coding) is None
    ages = pd.DataFrame({"age": [0, 1, 1], "id": ["a", "b", "c"]})
    assert guess_covariate_column(ages, "sex", ["0", "1"], exclude=("age",)) is None


def test_the_usual_covariates_are_found_by_their_names():
    assert guess_usual_covariates(["Age", "Gender", "Scanner", "lh_thickness"]) == ["Gender", "Scanner"]
    assert guess_usual_covariates(["age", "SEX", "site", "gender"]) == ["SEX", "site"]  # one each
    assert guess_usual_covariates(["age", "x"]) == []
