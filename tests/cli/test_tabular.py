"""The command line as a user runs it: ``python -m normcore ...`` in a subprocess."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from normcore.registry import load_model
from tests.conftest import ROOT

TINY_FIT = ["--epochs", "2", "--timesteps", "100", "--sampling-steps", "8", "--samples", "100",
            "--backbone-params", '{"width": 32, "depth": 1, "emb_dim": 16}', "--device", "cpu"]


def run(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "normcore", *map(str, args), "--threads", "1"], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    run("synth", "--n", 250, "--d", 3, "--patients", 10, "--sites", 2, "--seed", 1, "--out", tmp / "data.csv")
    run("fit", tmp / "data.csv", "--age", "age", "--covariates", "sex,site", "--idps-regex", "^idp_",
        "--group-col", "group", "--control-value", "control", *TINY_FIT, "--out", tmp / "model")
    return tmp


def test_synth_writes_data_and_truth(workflow):
    df = pd.read_csv(workflow / "data.csv")
    assert len(df) == 260 and (df.group == "patient").sum() == 10
    truth = json.loads((workflow / "data.truth.json").read_text())
    assert truth["d"] == 3 and truth["n_sites"] == 2


def test_fit_writes_a_model_folder(workflow):
    card = json.loads((workflow / "model" / "model.json").read_text())
    assert card["idps"] == ["idp_01", "idp_02", "idp_03"]
    assert card["covariates"] == {"age": "age", "categorical": ["sex", "site"]}
    assert card["training_data"]["n_train"] + card["training_data"]["n_validation"] == 250  # controls only


def test_fit_leaves_a_numeric_subject_id_column_out_of_the_idps(workflow):
    """UK Biobank's numeric ``eid``: not a measure, though every other numeric column is one by default."""
    df = pd.read_csv(workflow / "data.csv")
    df.insert(0, "eid", range(1000000, 1000000 + len(df)))
    df[df.group == "control"].drop(columns=["sub_id", "group"], errors="ignore").to_csv(workflow / "eid.csv",
                                                                                        index=False)
    proc = run("fit", workflow / "eid.csv", "--age", "age", "--covariates", "sex,site", "--backbone",
               "shash-baseline", "--out", workflow / "eid_model")
    assert "warning: column 'eid' holds subject IDs" in proc.stderr
    assert json.loads((workflow / "eid_model" / "model.json").read_text())["idps"] == ["idp_01", "idp_02", "idp_03"]


def test_fit_with_a_batch_covariate_keeps_it_out_of_the_network(workflow):
    run("fit", workflow / "data.csv", "--age", "age", "--covariates", "sex,site", "--batch-covariates", "site",
        "--idps-regex", "^idp_", "--group-col", "group", *TINY_FIT, "--out", workflow / "batch")
    card = json.loads((workflow / "batch" / "model.json").read_text())
    assert card["params"]["batch_covariates"] == ["site"] and card["encoder"]["batch"] == ["site"]
    model = load_model(workflow / "batch")
    assert model.encoder_.network_covariates == ["sex"] and model.net_.embed.cond[0].in_features == 1 + 2
    run("score", workflow / "batch", workflow / "data.csv", "--out", workflow / "batch.csv", "--samples", 100)
    assert pd.read_csv(workflow / "batch.csv")["z:idp_01"].notna().all()


def test_score_contract_columns(workflow):
    run("score", workflow / "model", workflow / "data.csv", "--out", workflow / "scores.csv", "--samples", 150)
    scores = pd.read_csv(workflow / "scores.csv")
    data = pd.read_csv(workflow / "data.csv")
    expected = list(data.columns) + [f"{k}:{i}" for i in ["idp_01", "idp_02", "idp_03"] for k in ("z", "centile")]
    assert list(scores.columns) == expected + ["multivariate_d2", "multivariate_z", "n_beyond_samples", "out_of_range"]
    assert scores["centile:idp_01"].between(0, 1).all()


def test_score_sampling_noise_option(workflow):
    """--sampling-noise overrides the model's noise (same seed, other draws); a model without samples refuses it."""
    outs = {}
    for noise in ("pseudo-random", "sobol"):
        run("score", workflow / "model", workflow / "data.csv", "--out", workflow / f"scores_{noise}.csv",
            "--seed", 3, "--sampling-noise", noise)
        outs[noise] = pd.read_csv(workflow / f"scores_{noise}.csv")
    assert list(outs["sobol"].columns) == list(outs["pseudo-random"].columns)
    assert not outs["sobol"]["z:idp_01"].equals(outs["pseudo-random"]["z:idp_01"])
    assert outs["sobol"]["z:idp_01"].corr(outs["pseudo-random"]["z:idp_01"]) > 0.95
    run("fit", workflow / "data.csv", "--age", "age", "--covariates", "sex,site", "--idps-regex", "^idp_",
        "--backbone", "shash-baseline", "--out", workflow / "base_noise")
    proc = run("score", workflow / "base_noise", workflow / "data.csv", "--out", workflow / "x.csv",
               "--sampling-noise", "sobol", check=False)
    assert proc.returncode == 2 and "--sampling-noise" in proc.stderr and "Traceback" not in proc.stderr


def test_tail_scale_option_moves_only_the_extrapolated_z(workflow):
    """--tail-scale on fit is stored in the model; on score it overrides the model's: z beyond the samples' outer
    1% change with the scale, the rest are the same draws and the same z."""
    data = pd.read_csv(workflow / "data.csv")
    rows = data[data.group == "control"].head(6).reset_index(drop=True)
    rows.loc[:2, "idp_01"] += [8 * data.idp_01.std(), -8 * data.idp_01.std(), 12 * data.idp_01.std()]
    rows.to_csv(workflow / "extreme.csv", index=False)
    outs = {}
    for scale in ("gaussianised", "residual"):
        run("score", workflow / "model", workflow / "extreme.csv", "--out", workflow / f"tail_{scale}.csv",
            "--seed", 2, "--tail-scale", scale)
        outs[scale] = pd.read_csv(workflow / f"tail_{scale}.csv")
    z = {scale: out[[f"z:idp_0{i}" for i in (1, 2, 3)]].to_numpy() for scale, out in outs.items()}
    far = (outs["gaussianised"].n_beyond_samples > 0).to_numpy()
    assert far[:3].all() and abs(z["residual"][:3, 0] - z["gaussianised"][:3, 0]).min() > 1e-3
    body = abs(z["gaussianised"]) < 2.0
    assert body.sum() >= 12 and (z["residual"][body] == z["gaussianised"][body]).all()
    run("fit", workflow / "data.csv", "--age", "age", "--covariates", "sex,site", "--idps-regex", "^idp_",
        "--group-col", "group", *TINY_FIT, "--tail-scale", "residual", "--out", workflow / "model_residual")
    card = json.loads((workflow / "model_residual" / "model.json").read_text())
    assert card["params"]["tail_scale"] == "residual"


def test_age_resolution_option_reaches_the_model(workflow):
    """--age-resolution sets the bin within which subjects share samples for this run: the CLI's scores equal the
    Python API's with the same ``score_age_resolution`` and seed, and differ from those with the model's bins."""
    outs = {}
    for res in ("0", None):
        extra = ["--age-resolution", res] if res else []
        run("score", workflow / "model", workflow / "data.csv", "--out", workflow / f"res_{res}.csv", "--seed", 4,
            *extra)
        outs[res] = pd.read_csv(workflow / f"res_{res}.csv")
    model = load_model(workflow / "model").set_params(score_age_resolution=0)
    api = model.score(pd.read_csv(workflow / "data.csv"), seed=4)
    cols = [f"z:idp_0{i}" for i in (1, 2, 3)]
    np.testing.assert_allclose(outs["0"][cols].to_numpy(), api[cols].to_numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(outs["0"][cols].to_numpy(), outs[None][cols].to_numpy(), rtol=0, atol=1e-3)
    proc = run("score", workflow / "model", workflow / "data.csv", "--out", workflow / "x.csv", "--age-resolution",
               "-1", check=False)
    assert proc.returncode == 2 and "--age-resolution" in proc.stderr and "Traceback" not in proc.stderr


def test_centiles_contract_long_format(workflow):
    proc = run("centiles", workflow / "model", "--ages", "20:80:10", "--set", "sex=1", "--quantiles", "0.1,0.5,0.9",
               "--samples", 200, "--out", workflow / "curves.csv")
    curves = pd.read_csv(workflow / "curves.csv")
    assert list(curves.columns) == ["age", "sex", "idp", "quantile", "value"]
    assert len(curves) == 7 * 3 * 3 and sorted(curves["age"].unique()) == [20, 30, 40, 50, 60, 70, 80]
    assert "site marginalised" in proc.stdout
    lo, hi = load_model(workflow / "model").age_range_
    n_outside = sum(a < lo or a > hi for a in range(20, 81, 10))
    assert ("outside the training age range" in proc.stdout) == (n_outside > 0)
    proc = run("centiles", workflow / "model", "--ages", f"{hi + 1:g}:{hi + 3:g}:1", "--samples", 50,
               "--out", workflow / "beyond.csv")
    assert f"3 of the ages lie outside the training age range {lo:g}-{hi:g} (extrapolated)" in proc.stdout


def test_sample_command(workflow):
    pd.DataFrame({"age": [30, 60], "sex": [0, 1], "site": ["site_01", "site_02"]}).to_csv(workflow / "cov.csv",
                                                                                         index=False)
    run("sample", workflow / "model", workflow / "cov.csv", "--n", 4, "--out", workflow / "samples.csv")
    samples = pd.read_csv(workflow / "samples.csv")
    assert len(samples) == 8 and {"idp_01", "sample", "site"} <= set(samples.columns)
    hi = load_model(workflow / "model").age_range_[1]
    pd.DataFrame({"age": [hi + 5], "sex": [0], "site": ["site_01"]}).to_csv(workflow / "old.csv", index=False)
    proc = run("sample", workflow / "model", workflow / "old.csv", "--n", 2, "--out", workflow / "old_samples.csv")
    assert "1 row(s) aged outside the training age range" in proc.stdout


@pytest.mark.parametrize("content,needle", [
    ("", "empty"),
    ("age,sex,site,idp_01,idp_02,idp_03\n40,1,site_01,abc,2,3\n", "non-numeric"),
    ("years,sex,site,idp_01,idp_02,idp_03\n40,1,site_01,1,2,3\n", "'age' not found"),
    ("age,sex,idp_01,idp_02,idp_03\n40,1,1,2,3\n", "'site' not found"),
    ("Age,sex,site,idp_01,idp_02,idp_03\n40,1,site_01,1,2,3\n", "'age' not found (did you mean 'Age'?)"),
    ("age,sex,site,idp_01,idp_02,idp_03\n40,1,mars,1,2,3\n", "not seen in training"),
])
def test_bad_score_input_gives_one_line_error(workflow, content, needle):
    bad = workflow / "bad.csv"
    bad.write_text(content)
    proc = run("score", workflow / "model", bad, "--out", workflow / "never.csv", check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "bad.csv" in proc.stderr
    assert not (workflow / "never.csv").exists()


def test_bad_fit_arguments_are_refused(workflow):
    proc = run("fit", workflow / "data.csv", "--age", "age", "--idps", "idp_01,nope", "--out", workflow / "m2",
               check=False)
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("fit", workflow / "data.csv", "--age", "age", "--covariates", "sex", "--batch-covariates", "site",
               "--out", workflow / "m2", check=False)
    assert proc.returncode == 2 and "--batch-covariates ['site']" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("centiles", workflow / "model", "--ages", "90:20:1", "--out", workflow / "c.csv", check=False)
    assert proc.returncode == 2 and "--ages" in proc.stderr
    proc = run("score", workflow / "nomodel", workflow / "data.csv", "--out", workflow / "s.csv", check=False)
    assert proc.returncode == 2 and "not a model folder" in proc.stderr
    proc = run("fit", workflow / "data.csv", "--age", "age", "--group-col", "group", "--control-value", "Control",
               "--out", workflow / "m2", check=False)  # the column's values are named, not just the one missing
    assert proc.returncode == 2 and "no rows with group == 'Control' (it holds ['control', 'patient'])" in proc.stderr


def test_evaluate_writes_every_metric_group(workflow):
    proc = run("evaluate", workflow / "model", workflow / "data.csv", "--truth", "synthetic", "--group-col", "group",
               "--control-value", "control", "--train", workflow / "data.csv", "--samples", 100,
               "--out", workflow / "report.json")
    report = json.loads((workflow / "report.json").read_text())
    assert {"per_idp", "aggregate", "dependence", "ks_by_age_band", "memorisation", "truth", "clinical"} <= set(report)
    assert report["n_controls"] == 250 and len(report["per_idp"]) == 3
    assert 0 <= report["aggregate"]["coverage95_mean"] <= 1 and report["truth"]["ace"] < 0.5
    assert {r["score"] for r in report["clinical"]} >= {"mean_abs_z", "multivariate_d2", "abs_z:idp_03"}
    assert "coverage 50/90/95%" in proc.stdout and "noise floor" in proc.stdout
    assert 0 < report["dependence"]["frobenius_oracle"] < 1
    assert report["multivariate"]["n"] == 250 and 0 <= report["multivariate"]["share_above_95"] <= 1
    assert "multivariate score:" in proc.stdout


def test_evaluate_refuses_a_missing_truth(workflow, tmp_path):
    other = tmp_path / "copy.csv"
    other.write_text((workflow / "data.csv").read_text())
    proc = run("evaluate", workflow / "model", other, "--truth", "synthetic", "--out", tmp_path / "r.json",
               check=False)
    assert proc.returncode == 2 and "truth.json not found" in proc.stderr


def test_shash_baseline_through_the_same_cli(workflow):
    run("fit", workflow / "data.csv", "--age", "age", "--covariates", "sex,site", "--idps-regex", "^idp_",
        "--backbone", "shash-baseline", "--out", workflow / "base")
    run("score", workflow / "base", workflow / "data.csv", "--out", workflow / "base_scores.csv")
    run("centiles", workflow / "base", "--ages", "20:80:30", "--set", "sex=0", "--out", workflow / "base_curves.csv")
    assert len(pd.read_csv(workflow / "base_scores.csv")) == 260
    assert len(pd.read_csv(workflow / "base_curves.csv")) == 3 * 5 * 3


def test_unknown_backbone_setting_is_refused_before_training(tmp_path):
    """Bug: found by searching a TypeError's text after construction; now checked by the model, by name."""
    run("synth", "--n", 60, "--d", 2, "--seed", 1, "--out", tmp_path / "d.csv")
    proc = run("fit", tmp_path / "d.csv", "--age", "age", "--covariates", "sex", "--backbone-params",
               '{"widht": 32}', "--out", tmp_path / "m", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "widht" in proc.stderr and "film-mlp" in proc.stderr and not (tmp_path / "m").exists()


def test_tabular_commands_name_an_imaging_model(tmp_path):
    proc = run("score", ROOT / "models" / "mri-ixi-cpu", tmp_path / "none.csv", "--out", tmp_path / "s.csv",
               check=False)
    assert proc.returncode == 2 and "an imaging restoration model (for mri-score), not a tabular model" in proc.stderr


def test_adapt_a_new_site_then_score_a_subset_of_idps(workflow, tmp_path):
    """`adapt` learns a site the model never saw; `score` takes a table with some of the model's IDPs."""
    data = pd.read_csv(workflow / "data.csv")
    site = data[data.group == "control"].head(30).assign(site="scanner_X").drop(columns=["idp_03"])
    site.to_csv(tmp_path / "site.csv", index=False)
    proc = run("adapt", workflow / "model", tmp_path / "site.csv", "--out", tmp_path / "adapted")
    assert "site=scanner_X (new level): 30 controls" in proc.stdout and "2 of 3 IDPs" in proc.stdout
    card = json.loads((tmp_path / "adapted" / "model.json").read_text())
    assert card["adaptation"][0]["levels"][0]["level"] == "scanner_X"
    proc = run("score", tmp_path / "adapted", tmp_path / "site.csv", "--out", tmp_path / "s.csv")
    scores = pd.read_csv(tmp_path / "s.csv")
    assert "z:idp_01" in scores and "z:idp_03" not in scores and "2 of the model's 3" not in proc.stdout
    assert "1 of the model's 3 IDPs are not in the table" in proc.stdout and "spelled otherwise" not in proc.stdout
    site.rename(columns={"idp_02": "IDP-02"}).to_csv(tmp_path / "respelled.csv", index=False)
    proc = run("score", tmp_path / "adapted", tmp_path / "respelled.csv", "--out", tmp_path / "r.csv")
    assert "1 of them are in it spelled otherwise, e.g. 'IDP-02' for 'idp_02'" in proc.stdout
    refused = run("adapt", workflow / "model", tmp_path / "site.csv", "--out", workflow / "model", check=False)
    assert refused.returncode == 2 and "must differ from the reference" in refused.stderr
    few = site.head(3)
    few.to_csv(tmp_path / "few.csv", index=False)
    refused = run("adapt", workflow / "model", tmp_path / "few.csv", "--out", tmp_path / "a2", check=False)
    assert refused.returncode == 2 and "at least 5" in refused.stderr and "Traceback" not in refused.stderr


def run_torchrun(*args, processes: int = 2):
    """``torchrun --standalone --nproc_per_node N -m normcore ...`` on the CPU (gloo), one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", "-m", "normcore", *map(str, args), "--threads", "1",
                           "--device", "cpu"], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def test_torchrun_score_and_centiles_equal_one_process(workflow):
    # 520 subjects on a 0.25-year age grid: two chunks of covariate points (one per rank), and many subjects mixed
    # from two grid ages, which may lie in different chunks
    data = pd.read_csv(workflow / "data.csv")
    pd.concat([data, data.assign(age=data.age + 0.37)]).to_csv(workflow / "big.csv", index=False)
    model = load_model(workflow / "model").set_params(score_age_resolution=0.25)
    u_age, _, _, weight, _ = model._score_points(*model._covariates_of(pd.read_csv(workflow / "big.csv"), "big"))
    assert len(u_age) > 256 and (weight[:, 1] > 0).sum() > 100
    common = ["--samples", 50, "--seed", 5]
    run("score", workflow / "model", workflow / "big.csv", "--out", workflow / "one.csv", "--age-resolution", 0.25,
        *common)
    run_torchrun("score", workflow / "model", workflow / "big.csv", "--out", workflow / "two.csv", "--age-resolution",
                 0.25, *common)
    one, two = pd.read_csv(workflow / "one.csv"), pd.read_csv(workflow / "two.csv")
    assert one["z:idp_01"].notna().all() and (one["z:idp_01"] != 0).all()  # every row scored (by either rank)
    pd.testing.assert_frame_equal(one, two, check_exact=True)

    # the PCNtoolkit tables: centiles and moments sampled on the same points, shared by the ranks
    pcn = ["--format", "pcntoolkit", "--age-resolution", 0.25, *common]
    run("score", workflow / "model", workflow / "big.csv", "--out", workflow / "pcn_one", *pcn)
    run_torchrun("score", workflow / "model", workflow / "big.csv", "--out", workflow / "pcn_two", *pcn)
    for name in ("Z_test.csv", "centiles_test.csv", "statistics_test.csv"):
        assert (workflow / "pcn_one" / name).read_text() == (workflow / "pcn_two" / name).read_text(), name

    grid = ["--ages", "20:80:0.2", "--quantiles", "0.05,0.5,0.95", *common]
    run("centiles", workflow / "model", *grid, "--out", workflow / "curves_one.csv")
    run_torchrun("centiles", workflow / "model", *grid, "--out", workflow / "curves_two.csv")
    curves_one, curves_two = pd.read_csv(workflow / "curves_one.csv"), pd.read_csv(workflow / "curves_two.csv")
    assert curves_one.age.nunique() > 256  # more ages than one chunk holds
    pd.testing.assert_frame_equal(curves_one, curves_two, check_exact=True)


def test_torchrun_refuses_single_process_commands(workflow):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "normcore", "sample", workflow / "model", workflow / "data.csv",
                           "--out", workflow / "s.csv"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode != 0 and "runs in one process" in proc.stderr
    assert not (workflow / "s.csv").exists()
