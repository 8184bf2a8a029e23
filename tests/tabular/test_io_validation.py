import io

import numpy as np
import pandas as pd
import pytest

from normcore._utils.errors import InputError
from normcore.tabular import read_table, resolve_idps, validate_table
from normcore.tabular.io import write_table_atomic


def test_read_table_sniffs_separators():
    for sep in (",", ";", "\t"):
        df = read_table(f"age{sep}x\n1{sep}2\n".encode())
        assert list(df.columns) == ["age", "x"]


@pytest.mark.parametrize("raw,needle", [(b"", "empty"), (b"a,b\n", "no rows"), (b"justonecolumn\n1\n", "column"),
                                        (b"\xff\xfe\x00garbage\x00,\n", "UTF-8"), (b"a,a\n1,2\n", "duplicate")])
def test_read_table_refuses_bad_files(raw, needle):
    with pytest.raises(InputError, match=needle):
        read_table(raw, name="upload.csv")


def test_read_table_refuses_huge_files():
    with pytest.raises(InputError, match="limit"):
        read_table(io.BytesIO(b"a,b\n" + b"1,2\n" * 100), max_bytes=50)


def test_a_local_file_may_be_as_large_as_the_memory_allows_an_upload_may_not(tmp_path, monkeypatch):
    """Uploads stop at MAX_TABLE_BYTES; a file the user names on their machine (e.g. a UK Biobank-sized cohort) may
    use 1/MEMORY_PER_TABLE_BYTE of the memory available, and a larger one is refused with the reason and the remedy."""
    import normcore.tabular.io as tio

    monkeypatch.setattr(tio, "MAX_TABLE_BYTES", 100)
    monkeypatch.setattr(tio, "available_memory", lambda: 1000 * tio.MEMORY_PER_TABLE_BYTE)
    assert tio.local_table_limit() == 1000
    content = b"a,b\n" + b"1,2\n" * 100  # 404 bytes
    (tmp_path / "mid.csv").write_bytes(content)
    assert len(read_table(tmp_path / "mid.csv")) == 100
    with pytest.raises(InputError, match="limit"):
        read_table(content, name="upload.csv")
    with pytest.raises(InputError, match="limit"):
        read_table(io.BytesIO(content))
    (tmp_path / "big.csv").write_bytes(content * 3)
    with pytest.raises(InputError, match="memory available now.*score it in parts"):
        read_table(tmp_path / "big.csv")
    monkeypatch.setattr(tio, "available_memory", lambda: None)  # unknown memory: the upload limit
    assert tio.local_table_limit() == 100


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path):
    write_table_atomic(pd.DataFrame({"a": [1]}), tmp_path / "out.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_resolve_idps_by_list_regex_and_default():
    df = pd.DataFrame({"age": [1.0], "sex": [0], "lh_a_thickness": [1.0], "rh_a_thickness": [2.0], "id": ["x"]})
    assert resolve_idps(df, idps_regex="_thickness$") == ["lh_a_thickness", "rh_a_thickness"]
    assert resolve_idps(df, exclude=["age", "sex"]) == ["lh_a_thickness", "rh_a_thickness"]
    with pytest.raises(InputError, match="not found"):
        resolve_idps(df, idps=["nope"])
    with pytest.raises(InputError, match="regular expression"):
        resolve_idps(df, idps_regex="(")


def test_validation_report_lists_every_problem_without_changing_data():
    df = pd.DataFrame({"id": ["a", "a", "b", "c"], "age": [20.0, 30.0, np.nan, 50.0], "site": ["s1", "s1", "s1", "s2"],
                       "x": [1.0, 2.0, 3.0, 4.0], "zero": [0.0] * 4})
    before = df.copy()
    rep = validate_table(df, "age", ["site"], ["x", "zero"], id_col="id", min_group_size=2)
    pd.testing.assert_frame_equal(df, before)
    assert rep.constant_idps == ["zero"] and rep.rows_with_missing == [2]
    assert rep.duplicate_ids == ["a"] and rep.small_groups == {"site": {"s2": 1}}
    assert not rep.errors and rep.age_range == (20.0, 50.0)


def test_a_table_of_one_age_is_warned_about():
    """A model of one age has no age curve: the report says so, and that other ages will be scored as that age."""
    df = pd.DataFrame({"age": [40.0] * 5, "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    rep = validate_table(df, "age", [], ["x"])
    assert not rep.errors
    messages = [f.message for f in rep.warnings]
    assert any("every subject has age 40" in w and "scored as if that age" in w for w in messages)
    df.loc[0, "age"] = 41.0
    assert not any("every subject" in w for w in (f.message for f in validate_table(df, "age", [], ["x"]).warnings))


def test_validation_errors_name_the_column():
    df = pd.DataFrame({"age": [20, 30], "x": ["1.0", "oops"]})
    rep = validate_table(df, "age", [], ["x"])
    with pytest.raises(InputError, match="'x' has non-numeric values such as 'oops'"):
        rep.raise_errors("t.csv")


def test_a_missing_column_names_the_column_the_user_most_likely_meant():
    df = pd.DataFrame({"Age": [20.0, 30.0], "x": [1.0, 2.0]})
    with pytest.raises(InputError, match=r"column 'age' not found \(did you mean 'Age'\?\)"):
        validate_table(df, "age", [], ["x"]).raise_errors("t.csv")


def test_fcon1000_all_zero_columns_are_detected(fcon_path):
    df = read_table(fcon_path)
    idps = resolve_idps(df, exclude=["age", "sex", "site", "sub_id", "avg_en"])
    rep = validate_table(df, "age", ["sex", "site"], idps, id_col="sub_id")
    assert not rep.errors
    assert len([c for c in rep.constant_idps if "hypointensities" in c]) == 4


def test_downloads_and_files_escape_formula_cells_but_not_numbers(tmp_path):
    from normcore.tabular.io import table_csv_bytes

    frame = pd.DataFrame({"=SUM(A1)": [1.5, -2.0], "note": ["+cmd|' /C calc'!A0", "@import"],
                          "id": ["-x", "ok"], "neg": [-3, 4]})
    text = table_csv_bytes(frame).decode()
    back = pd.read_csv(io.StringIO(text))
    assert list(back.columns) == ["'=SUM(A1)", "note", "id", "neg"]
    assert list(back.note) == ["'+cmd|' /C calc'!A0", "'@import"] and list(back.id) == ["'-x", "ok"]
    assert list(back["neg"]) == [-3, 4] and list(back["'=SUM(A1)"]) == [1.5, -2.0]  # numbers untouched
    write_table_atomic(frame, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == text


def test_training_table_keeps_incomplete_rows_only_for_a_model_that_fits_them():
    from normcore.tabular.validation import prepare_training_table

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.uniform(20, 80, 60), "sex": rng.integers(0, 2, 60).astype(float),
                       "a": rng.normal(size=60), "b": rng.normal(size=60), "rare": np.nan})
    df.loc[:9, "a"] = np.nan  # 10 rows miss one IDP value
    df.loc[10:11, ["a", "b"]] = np.nan  # 2 rows have none
    df.loc[12, "sex"] = np.nan  # 1 row misses a covariate
    df.loc[:14, "rare"] = rng.normal(size=15)  # observed in 15 rows: too few to fit
    args = (df, "age", ["sex"], ["a", "b", "rare"], None, "t.csv")
    with pytest.raises(InputError, match="only 2 complete rows"):  # rows 13 and 14 alone have every value
        prepare_training_table(*args)
    kept, idps, warnings = prepare_training_table(*args, keep_incomplete=True)
    assert idps == ["a", "b"]
    assert sorted(kept.index) == [i for i in range(60) if i not in (10, 11, 12)]
    assert any("1 IDP(s) are observed in fewer than 20 rows" in w for w in warnings)
    assert any("2 row(s) have no value of any IDP" in w for w in warnings)
    assert any("1 row(s) miss age or a covariate" in w for w in warnings)


def test_a_consortium_of_hundreds_of_sites_is_categorical_and_a_measure_is_not():
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({"age": rng.uniform(20, 80, n), "x": rng.normal(size=n),
                       "site": [f"site_{i:03d}" for i in rng.integers(0, 300, n)],  # 300 sites, ~10 subjects each
                       "scanner": rng.integers(0, 300, n),  # the same as whole-number codes
                       "etiv": rng.normal(1.5e6, 1e5, n),  # a measure named as a covariate
                       "sub": np.arange(n)})  # one level per row
    rep = validate_table(df, "age", ["site", "scanner", "etiv", "sub"], ["x"])
    refused = {f.column for f in rep.errors}
    assert refused == {"etiv", "sub"} and all("is it continuous?" in f.message for f in rep.errors)


def test_numeric_subject_ids_are_not_taken_as_an_idp_unless_named():
    """UK Biobank's ``eid`` (and a ``participant_id`` of numbers) was fitted as a measure when IDPs were not named."""
    from normcore.tabular.validation import default_idps, looks_like_subject_ids, prepare_training_table

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"eid": np.arange(1000000, 1000060), "age": rng.uniform(20, 80, 60),
                       "sex": rng.integers(0, 2, 60),
                       "participant_id": np.arange(60) % 30, "volume": rng.normal(5000, 400, 60),
                       "idp": rng.normal(size=60)})
    assert looks_like_subject_ids("eid", df.eid) and looks_like_subject_ids("Participant ID", df.participant_id)
    assert not looks_like_subject_ids("volume", df.volume.round()) and not looks_like_subject_ids("id", df.idp)
    idps, notes = default_idps(df, exclude=["age", "sex"])
    assert idps == ["volume", "idp"] and len(notes) == 2 and notes[0].startswith("column 'eid' holds subject IDs")
    kept, idps, warnings = prepare_training_table(df, "age", ["sex"], None, None, "table")
    assert idps == ["volume", "idp"] and any("'participant_id' holds subject IDs" in w for w in warnings)
    assert prepare_training_table(df, "age", ["sex"], ["eid", "volume"], None, "table")[1] == ["eid", "volume"]
    with pytest.raises(InputError, match="besides the covariates and the subject IDs"):
        default_idps(df[["age", "sex", "eid"]], exclude=["age", "sex"])
