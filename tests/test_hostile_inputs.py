"""The hostile-input corpus: malformed, extreme or malicious inputs through the command line (run in-process,
as ``python -m normcore`` runs it), with the expected outcome of every case.

Every case is either refused (exit 2, one line on stderr naming the problem, no traceback, nothing written)
or accepted with a checked, correct result. Small files are generated here; add a case for every bug found.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from normcore import InputError, make_model, make_synthetic
from normcore.cli.main import main
from normcore.persistence import zip_to_model_dir
from tests.conftest import TINY

IDPS = ["idp_01", "idp_02", "idp_03"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a clean table, a saved SHASH model and a saved tiny diffusion model."""
    tmp = tmp_path_factory.mktemp("hostile")
    df, _ = make_synthetic(240, d=3, n_sites=2, seed=5)
    df["sub_id"] = [f"s{i:03d}" for i in range(len(df))]
    df.to_csv(tmp / "clean.csv", index=False)
    controls = df[df.group == "control"]
    make_model("shash-baseline").fit(controls, age="age", covariates=["sex", "site"], idps=IDPS).save(tmp / "shash")
    make_model("film-mlp", **{**TINY, "epochs": 1}).fit(controls, age="age", covariates=["sex", "site"],
                                                        idps=IDPS).save(tmp / "diff")
    return tmp, df


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_refused(code: int, err: str, pattern: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert pattern.lower() in err.lower(), err


# ---------------------------------------------------------------- tables given to `score`
@dataclass
class TableCase:
    name: str
    edit: object  # (clean DataFrame) -> text of the file to score
    refused: str | None = None  # the message's key phrase, or None: accepted
    check: object = None  # (scores, clean scores, stderr) -> None for accepted cases
    flags: list = field(default_factory=list)


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


def _set(col: str, value, row: int = 0):
    def edit(df):
        df = df.copy().astype({col: object})
        df.loc[row, col] = value
        return _csv(df)
    return edit


def _same_scores(scores, clean, err):
    cols = [c for c in clean.columns if c.startswith(("z:", "centile:"))]
    np.testing.assert_allclose(scores[cols].to_numpy(float), clean[cols].to_numpy(float))


def _trailing_delimiter(df):
    lines = _csv(df).splitlines()
    return "\n".join([lines[0]] + [ln + "," for ln in lines[1:]]) + "\n"


def _european(df):
    text = df.to_csv(index=False, sep=";", decimal=",")
    return text


TABLE_CASES = [
    TableCase("infinite age", _set("age", "inf"), "impossible age inf"),
    TableCase("negative age", _set("age", -5), "impossible age -5"),
    TableCase("age 200", _set("age", 200), "impossible age 200"),
    TableCase("infinite IDP", _set("idp_02", "-inf", 3), "infinite value in row 4"),
    TableCase("non-numeric IDP", _set("idp_01", "12,3.4"), "non-numeric"),
    TableCase("missing age", _set("age", ""), "missing or non-numeric value in row 1"),
    TableCase("unknown site", _set("site", "mars"), "not seen in training"),
    TableCase("no IDP column", lambda df: _csv(df.drop(columns=IDPS)), "none of the model's 3 IDP columns"),
    TableCase("no covariate column", lambda df: _csv(df.drop(columns=["sex"])), "'sex' not found"),
    TableCase("empty file", lambda df: "", "empty"),
    TableCase("header only", lambda df: _csv(df.head(0)), "no rows"),
    TableCase("one column", lambda df: "age\n40\n", "expected a table"),
    TableCase("duplicate column names", lambda df: _csv(df).replace("idp_03", "idp_02", 1), "duplicate column"),
    TableCase("binary garbage", lambda df: "\x00\xff\xfe" * 50, "not"),
    TableCase("an Excel workbook", lambda df: "PK\x03\x04[Content_Types].xml", "Save As > CSV UTF-8"),
    TableCase("rows ending in a delimiter", _trailing_delimiter, None,
              lambda s, c, err: (_same_scores(s, c, err), ("delimiter" in err) or pytest.fail(err))),
    TableCase("semicolons with decimal commas", _european, None,
              lambda s, c, err: (_same_scores(s, c, err), ("decimal commas" in err) or pytest.fail(err))),
    TableCase("a table scored before", lambda df: None, None,
              lambda s, c, err: (_same_scores(s, c, err), s.columns.is_unique or pytest.fail("duplicate columns"),
                                 ("replaced" in err) or pytest.fail(err))),
    TableCase("missing IDP value", _set("idp_02", "", 5), None,
              lambda s, c, err: (np.isnan(s.loc[5, "z:idp_02"]) or pytest.fail("z of a missing value"),
                                 np.isfinite(s.loc[5, "z:idp_01"]) or pytest.fail("other IDPs lost"))),
    TableCase("formula in a cell", _set("sub_id", "=HYPERLINK(\"http://x\",\"y\")"), None,
              lambda s, c, err: (s.loc[0, "sub_id"].startswith("'=") or pytest.fail(s.loc[0, "sub_id"]))),
    TableCase("duplicate subject IDs", _set("sub_id", "s001", 0), None,
              lambda s, c, err: ("duplicate" in err.lower() and "s001" in err) or pytest.fail(err),
              ["--id-col", "sub_id"]),
]


@pytest.fixture(scope="module")
def clean_scores(world):
    tmp, _ = world
    assert main(["score", str(tmp / "shash"), str(tmp / "clean.csv"), "--out", str(tmp / "clean_scores.csv")]) == 0
    return pd.read_csv(tmp / "clean_scores.csv", keep_default_na=True)


@pytest.mark.parametrize("case", TABLE_CASES, ids=[c.name for c in TABLE_CASES])
def test_scoring_a_hostile_table(case, world, clean_scores, capsys, tmp_path):
    tmp, df = world
    path = tmp_path / "input.csv"
    text = case.edit(df.copy())
    if text is None:  # the output of a previous scoring, scored again
        text = (tmp / "clean_scores.csv").read_text()
    path.write_bytes(text.encode("latin-1") if case.name == "binary garbage" else text.encode())
    out = tmp_path / "scores.csv"
    code, _, err = cli(capsys, "score", tmp / "shash", path, "--out", out, *case.flags)
    if case.refused:
        assert_refused(code, err, case.refused)
        assert not out.exists()
    else:
        assert code == 0, err
        assert "Traceback" not in err
        scores = pd.read_csv(out, dtype={"sub_id": str})
        case.check(scores, clean_scores, err)


# ---------------------------------------------------------------- flags and destinations
FLAG_CASES = [
    ("score --samples 0", ["score", "{diff}", "{clean}", "--out", "{out}", "--samples", "0"], "--samples"),
    ("score --samples -5", ["score", "{diff}", "{clean}", "--out", "{out}", "--samples", "-5"], "--samples"),
    ("score --seed -1", ["score", "{diff}", "{clean}", "--out", "{out}", "--seed", "-1"], "--seed"),
    ("score --threads -1", ["score", "{diff}", "{clean}", "--out", "{out}", "--threads", "-1"], "--threads"),
    ("score unknown --device", ["score", "{diff}", "{clean}", "--out", "{out}", "--device", "nodevice"],
     "unknown device"),
    ("score --out a folder", ["score", "{shash}", "{clean}", "--out", "{tmp}"], "is a folder"),
    ("score --out the input", ["score", "{shash}", "{copy}", "--out", "{copy}"], "is the input table"),
    ("score --out inside a file", ["score", "{shash}", "{clean}", "--out", "{copy}/s.csv"], "is a file, not a folder"),
    ("fit --out inside a file", ["fit", "{clean}", "--age", "age", "--out", "{copy}/m"], "is a file, not a folder"),
    ("fit --epochs 0", ["fit", "{clean}", "--age", "age", "--epochs", "0", "--out", "{new}"], "--epochs"),
    ("fit --batch-size 0", ["fit", "{clean}", "--age", "age", "--batch-size", "0", "--out", "{new}"], "--batch-size"),
    ("fit --timesteps 1", ["fit", "{clean}", "--age", "age", "--timesteps", "1", "--out", "{new}"], "--timesteps"),
    ("fit --samples 0", ["fit", "{clean}", "--age", "age", "--samples", "0", "--out", "{new}"], "--samples"),
    ("fit --sampling-steps above --timesteps", ["fit", "{clean}", "--age", "age", "--timesteps", "100",
                                                "--sampling-steps", "500", "--out", "{new}"], "exceeds timesteps"),
    ("fit --covariates sex,sex", ["fit", "{clean}", "--age", "age", "--covariates", "sex,sex",
                                  "--idps-regex", "^idp_", "--out", "{new}"], "used twice"),
    ("fit the age as a covariate", ["fit", "{clean}", "--age", "age", "--covariates", "age",
                                    "--idps-regex", "^idp_", "--out", "{new}"], "used twice"),
    ("fit the age as an IDP", ["fit", "{clean}", "--age", "age", "--idps", "idp_01,age", "--out", "{new}"],
     "used twice"),
    ("fit --out the input CSV", ["fit", "{copy}", "--age", "age", "--out", "{copy}"], "is a file"),
    ("fit --out a folder of other files", ["fit", "{clean}", "--age", "age", "--out", "{tmp}"], "holds other files"),
    ("fit malformed --backbone-params", ["fit", "{clean}", "--age", "age", "--backbone-params", "{{width",
                                         "--out", "{new}"], "not valid JSON"),
    ("fit unknown --backbone-params key", ["fit", "{clean}", "--age", "age", "--idps-regex", "^idp_",
                                           "--backbone-params", '{{"widht": 3}}', "--out", "{new}"], "widht"),
    ("adapt --out the data's folder", ["adapt", "{shash}", "{clean}", "--out", "{tmp}"], "holds other files"),
    ("centiles --samples 0", ["centiles", "{diff}", "--ages", "20:30:5", "--samples", "0", "--out", "{out}"],
     "--samples"),
    ("sample --n 0", ["sample", "{diff}", "{clean}", "--n", "0", "--out", "{out}"], "--n"),
    ("synth --n -1", ["synth", "--n", "-1", "--out", "{out}"], "--n"),
    ("mri-score --age 200", ["mri-score", "{shash}", "{clean}", "--age", "200", "--sex", "F", "--out", "{tmp}/m"],
     "--age"),
    ("mri-fit malformed --config-overrides", ["mri-fit", "--images", "{tmp}", "--participants", "{clean}",
                                              "--config-overrides", "{{oops", "--out", "{new}"], "not valid JSON"),
    ("mri-fit --validation 1.5", ["mri-fit", "--images", "{tmp}", "--participants", "{clean}", "--validation", "1.5",
                                  "--out", "{new}"], "--validation"),
]


@pytest.mark.parametrize("name,argv,pattern", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_a_hostile_flag_or_destination_is_refused_before_any_work(name, argv, pattern, world, capsys, tmp_path):
    tmp, _ = world
    copy = tmp_path / "copy.csv"
    copy.write_bytes((tmp / "clean.csv").read_bytes())
    before = copy.read_bytes()
    places = {"diff": tmp / "diff", "shash": tmp / "shash", "clean": tmp / "clean.csv", "out": tmp_path / "o.csv",
              "tmp": tmp, "new": tmp_path / "new_model", "copy": copy}
    args = [a.format(**places) for a in argv]
    if args[0] == "score" or args[0] == "centiles" or args[0] == "sample":
        args += ["--quiet"]
    try:
        code, _, err = cli(capsys, *args)
    except SystemExit as exc:  # argparse refuses a flag value: exit 2 with usage and one error line
        code, err = exc.code, capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and pattern in err, err
        return
    assert_refused(code, err, pattern)
    assert copy.read_bytes() == before  # the user's file is untouched
    assert not (tmp_path / "new_model").exists() and not (tmp_path / "o.csv").exists()


def test_an_unexpected_error_is_one_line_with_a_log(world, capsys, monkeypatch):
    tmp, _ = world
    import normcore.tabular.base as base

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(base.NormativeModel, "score", broken)
    code, _, err = cli(capsys, "score", tmp / "shash", tmp / "clean.csv", "--out", tmp / "never.csv")
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "unexpected ZeroDivisionError" in err
    log = Path(err.split("details in ")[1].split(";")[0])
    assert "ZeroDivisionError: a bug" in log.read_text()


# ---------------------------------------------------------------- damaged or hostile model folders
def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("model.json", "model.safetensors"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _edit_card(path: Path, edit) -> None:
    card = json.loads((path / "model.json").read_text())
    edit(card)
    (path / "model.json").write_text(json.dumps(card, allow_nan=True))


CARD_CASES = [
    ("non-finite preprocessing parameter",
     lambda c: c["transformer"].__setitem__(next(iter(c["transformer"])), float("nan"))
     if not isinstance(c["transformer"][next(iter(c["transformer"]))], list) else
     c["transformer"][next(iter(c["transformer"]))].__setitem__(0, float("nan")), "non-finite"),
    ("missing key", lambda c: c.pop("encoder"), "incomplete or malformed"),
    ("unknown sampler", lambda c: c["params"].__setitem__("sampler", "euler-magic"), "sampler="),
    ("zero samples", lambda c: c["params"].__setitem__("n_samples", 0), "n_samples=0"),
    ("newer format", lambda c: c.__setitem__("format_version", 99), "newer normcore"),
    ("not a card", None, "not valid JSON"),
]


@pytest.mark.parametrize("name,edit,pattern", CARD_CASES, ids=[c[0] for c in CARD_CASES])
def test_a_damaged_card_is_refused_on_load(name, edit, pattern, world, capsys, tmp_path):
    tmp, _ = world
    model = _copy_model(tmp / "diff", tmp_path / "m")
    if edit is None:
        (model / "model.json").write_text("{ this is not json")
    else:
        _edit_card(model, edit)
    code, _, err = cli(capsys, "score", model, tmp / "clean.csv", "--out", tmp_path / "s.csv")
    assert_refused(code, err, pattern)


def test_weights_with_non_finite_values_are_refused(world, capsys, tmp_path):
    tmp, _ = world
    model = _copy_model(tmp / "diff", tmp_path / "m")
    tensors = load_file(str(model / "model.safetensors"))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(model / "model.safetensors"))
    code, _, err = cli(capsys, "score", model, tmp / "clean.csv", "--out", tmp_path / "s.csv")
    assert_refused(code, err, "non-finite values")


def test_a_gpu_card_scores_on_this_cpu_with_a_note(world, capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    tmp, _ = world
    model = _copy_model(tmp / "diff", tmp_path / "m")
    _edit_card(model, lambda c: c["params"].__setitem__("device", "cuda"))
    code, _, err = cli(capsys, "score", model, tmp / "clean.csv", "--out", tmp_path / "s.csv", "--samples", "50")
    assert code == 0 and "runs on the CPU" in err
    assert pd.read_csv(tmp_path / "s.csv")["z:idp_01"].notna().all()


def _zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_hostile_model_zips_are_refused_and_leave_the_old_model(world, tmp_path):
    tmp, _ = world
    target = _copy_model(tmp / "shash", tmp_path / "model")
    before = (target / "model.json").read_bytes()
    card, weights = before, (target / "model.safetensors").read_bytes()
    bomb = _zip({"model.json": card, "model.safetensors": bytes(600 * 1024**2)})
    assert len(bomb) < 2 * 1024**2
    cases = {
        "a zip bomb": (bomb, "inflates to more than"),
        "not a zip": (b"PK\x03\x04 nonsense", "not a zip"),
        "extra member": (_zip({"model.json": card, "model.safetensors": weights, "run.py": b"import os"}), "exactly"),
        "path traversal": (_zip({"../../model.json": card, "model.safetensors": weights, "../x": b""}), "exactly"),
    }
    crc = bytearray(_zip({"model.json": card, "model.safetensors": weights}, zipfile.ZIP_STORED))
    at = bytes(crc).find(b'"format"')
    crc[at + 2] ^= 0xFF
    cases["a damaged member (CRC)"] = (bytes(crc), "damaged")
    for name, (data, pattern) in cases.items():
        with pytest.raises(InputError, match=pattern):
            zip_to_model_dir(data, target)
        assert (target / "model.json").read_bytes() == before, name
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], name  # nothing left beside it


def test_a_model_saved_over_a_users_folder_is_refused(world, tmp_path):
    from normcore import load_model

    tmp, _ = world
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.docx").write_text("years of work")
    model = load_model(tmp / "shash")
    with pytest.raises(InputError, match="holds other files"):
        model.save(home)
    assert (home / "thesis.docx").read_text() == "years of work"
    with pytest.raises(InputError, match="is a file"):
        model.save(home / "thesis.docx")


def test_a_file_system_refusal_is_one_line(world, capsys, monkeypatch):
    tmp, _ = world
    import importlib

    cli_main = importlib.import_module("normcore.cli.main")

    def denied(df, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cli_main, "write_table_atomic", denied)
    code, _, err = cli(capsys, "score", tmp / "shash", tmp / "clean.csv", "--out", tmp / "denied.csv")
    assert_refused(code, err, "denied.csv: Permission denied")
