"""Per-session model folders, the shared library, autosave and restore (no Streamlit)."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from dashboard.library import SessionLibrary, new_session_key, remove_stale_sessions
from normcore import InputError, make_model, make_synthetic


@pytest.fixture(scope="module")
def model():
    df, truth = make_synthetic(150, d=2, seed=2)
    return make_model("shash-baseline").fit(df, age="age", covariates=["sex"], idps=truth.idp_names)


def test_sessions_see_their_own_models_and_the_published_ones_only(tmp_path, model):
    alice, bob = SessionLibrary(tmp_path, new_session_key()), SessionLibrary(tmp_path, new_session_key())
    alice.save(model, "alice-model")
    assert list(alice.saved()) == ["mine: alice-model"] and bob.saved() == {}
    alice.publish("alice-model")
    assert list(bob.saved()) == ["shared: alice-model"]
    assert oct(alice.folder.stat().st_mode & 0o777) == "0o700"  # private work stays private
    assert oct((alice.shared_dir / "alice-model" / "model.json").stat().st_mode & 0o777) == "0o644"


def test_names_never_silently_replace_a_model(tmp_path, model):
    lib = SessionLibrary(tmp_path, new_session_key())
    lib.save(model, "m")
    with pytest.raises(InputError, match="already saved"):
        lib.save(model, "m")
    lib.save(model, "m", replace=True)
    lib.publish("m")
    with pytest.raises(InputError, match="already holds"):
        lib.publish("m")
    for bad in ("../escape", ".hidden", "", "a" * 65, "a/b"):
        with pytest.raises(InputError, match="letters, digits"):
            lib.save(model, bad)
    with pytest.raises(InputError, match="invalid session key"):
        SessionLibrary(tmp_path, "../../etc")


def test_a_refused_upload_leaves_nothing_behind(tmp_path):
    lib = SessionLibrary(tmp_path, new_session_key())
    with pytest.raises(InputError, match="not a zip"):
        lib.import_zip(b"not a zip at all", "upload-1")
    assert list(lib.models_dir.iterdir()) == [] and lib.saved() == {}


def test_the_last_work_is_restorable_in_the_same_session_only(tmp_path, model):
    key = new_session_key()
    lib = SessionLibrary(tmp_path, key)
    assert lib.restorable() == {}
    table = pd.DataFrame({"age": [30.0, 40.0], "sex": ["0", "1"], "idp_01": [1.5, 2.5], "note": ["=cmd", "ok"]})
    lib.save_table(table, "upload: t.csv", {"age": "age", "idps": ["idp_01"]})
    lib.autosave(model, "fitted: shash")
    again = SessionLibrary(tmp_path, key)  # the same link after a reload
    assert again.restorable() == {"table_name": "upload: t.csv", "mapping": {"age": "age", "idps": ["idp_01"]},
                                  "model_label": "fitted: shash"}
    restored = again.restored_table()
    assert restored[["age", "idp_01"]].equals(table[["age", "idp_01"]])
    assert list(restored.note) == ["=cmd", "ok"]  # the user's own cells come back unchanged
    assert SessionLibrary(tmp_path, new_session_key()).restorable() == {}


def test_stale_sessions_are_removed(tmp_path, model):
    old, fresh = SessionLibrary(tmp_path, new_session_key()), SessionLibrary(tmp_path, new_session_key())
    old.save(model, "m")
    fresh.save(model, "m")
    past = time.time() - 30 * 86400
    os.utime(old.folder, (past, past))
    assert remove_stale_sessions(tmp_path) == [old.key]
    assert not (tmp_path / "sessions" / old.key).exists() and fresh.saved()
