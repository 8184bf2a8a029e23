"""Headless app tests of the MRI page with a tiny imaging model and tiny demo scans (CPU, seconds)."""

from __future__ import annotations

import gzip
import json
import threading
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from normcore.imaging.diffae import NormativeDiffusionAutoencoder
from normcore.imaging.grid import ModelGrid, template_on_grid
from normcore.imaging.model import ImagingNormativeModel
from normcore.imaging.pipeline import nifti_bytes
from tests.conftest import ROOT
from tests.dashboard.conftest import with_fast_model
from tests.plotting.test_imaging import values

torch.set_num_threads(1)
TIMEOUT = 600  # an upper bound for a slow shared CI box, not a timing assertion
# Demo scans in MNI space at 6 mm: the tiny model's 12 mm grid is coarser than the 10 mm that io accepts for input
# scans, so the scans are stored finer and the pipeline resamples them (register=False) onto the model grid.
SCAN_GRID = ModelGrid(6.0, (32, 32, 32))


def _save(data: np.ndarray, path, dtype=np.float32) -> None:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype), SCAN_GRID.affine), str(path))


@pytest.fixture(scope="session")
def mri_setup(tmp_path_factory):
    """A tiny fitted imaging model that leads with the peak index, as the shipped one does, and a demo folder
    (healthy scan, the same scan with a bright lesion)."""
    root = tmp_path_factory.mktemp("mri")
    model = ImagingNormativeModel("tiny", device="cpu", headline_index="peak")
    template, brain = template_on_grid(model.grid)
    rng = np.random.default_rng(0)
    n = 8
    vols = np.clip(template[None] * (1 + 0.05 * rng.standard_normal((n, 1, 1, 1)))
                   + 0.02 * rng.standard_normal((n, *model.grid.shape)), 0, 1) * brain
    brains = np.repeat(brain[None], n, 0)
    ages, sexes = rng.uniform(20, 80, n), list(rng.choice(["M", "F"], n))
    model.fit(vols[:4], brains[:4], ages[:4], sexes[:4], vols[4:], brains[4:], ages[4:], sexes[4:])
    model.save(root / "model")
    # the whole-brain panels' diffusion autoencoder on the same grid (its latent model needs 20 training scans)
    n = 26
    vols = np.clip(template[None] * (1 + 0.05 * rng.standard_normal((n, 1, 1, 1)))
                   + 0.02 * rng.standard_normal((n, *model.grid.shape)), 0, 1) * brain
    brains, ages, sexes = np.repeat(brain[None], n, 0), rng.uniform(20, 80, n), list(rng.choice(["M", "F"], n))
    dae = NormativeDiffusionAutoencoder("tiny", semantic_dim=4, inversion_steps=10, matched_k=3, device="cpu",
                                        latent_model_params={"epochs": 3, "n_samples": 100, "sampling_steps": 8})
    dae.fit(vols[:21], brains[:21], ages[:21], sexes[:21], vols[21:], brains[21:], ages[21:], sexes[21:])
    dae.save(root / "diffae")
    model.fit_brain_age(vols[:21], ages[:21], vols[21:], ages[21:])  # 4 training scans are too few for one
    model.save(root / "model")

    demo = root / "demo"
    demo.mkdir()
    scan, scan_brain = template_on_grid(SCAN_GRID)
    scan = scan * scan_brain
    centre = np.argwhere(scan_brain).mean(0).round().astype(int)
    lesion = np.zeros_like(scan_brain)
    lesion[tuple(slice(c - 2, c + 2) for c in centre)] = True
    lesion &= scan_brain
    _save(scan, demo / "healthy.nii.gz")
    _save(np.where(lesion, 1.0, scan), demo / "lesion.nii.gz")
    _save(scan_brain, demo / "brain.nii.gz", np.uint8)
    _save(lesion, demo / "lesion_mask.nii.gz", np.uint8)
    entry = {"age": 40, "sex": "F", "brain": "brain.nii.gz"}
    (demo / "demo.json").write_text(json.dumps({"scans": [
        {"name": "healthy demo", "file": "healthy.nii.gz", **entry},
        {"name": "lesion demo", "file": "lesion.nii.gz", **entry, "lesion_mask": "lesion_mask.nii.gz"}]}))
    return {"model": root / "model", "diffae": root / "diffae", "demo": demo, "scan": scan, "empty": root / "empty"}


@pytest.fixture
def mri_env(mri_setup, monkeypatch):
    monkeypatch.setenv("NORMDIFF_MRI_MODEL", str(mri_setup["model"]))
    monkeypatch.setenv("NORMDIFF_MRI_DEMO_SCANS", str(mri_setup["demo"]))
    monkeypatch.setenv("NORMDIFF_MRI_LATENT_MODEL", str(mri_setup["diffae"]))
    return mri_setup


def mri_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/mri.py")
    return at.run()


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def widget(elements, label: str):
    return next(w for w in elements if w.label == label)


def run_and_wait(at) -> AppTest:
    button(at, "Run restoration").click().run()
    job = at.session_state["mri_job"]
    assert job.wait(TIMEOUT) == "done", job.error
    return at.run()


def test_page_renders_with_demo_scans_selected(mri_env):
    at = mri_page()
    assert not at.exception and not at.error
    assert at.radio[0].value == "Demo scans"
    assert widget(at.multiselect, "Demo scans").value == ["healthy demo", "lesion demo"]
    table = at.data_editor[0].value
    assert list(table["file"]) == ["healthy demo", "lesion demo"] and list(table["age"]) == [40, 40]
    assert not button(at, "Run restoration").disabled
    assert not charts(at)  # nothing is computed before the button


def test_demo_run_shows_metrics_charts_and_downloads(mri_env):
    at = run_and_wait(mri_page())
    assert not at.exception and not at.error
    results = at.session_state["mri_results"]
    assert set(results) == {"healthy demo", "lesion demo"}
    labels = [m.label for m in at.metric]
    assert labels == ["Abnormality index (peak: top 0.05%)", "Centile (peak: top 0.05%)",
                      "Abnormality index (top 1%)", "Centile (top 1%)", "Brain age", "Brain-age gap",
                      "Brain-age gap centile"]
    shown = at.session_state["mri_scan"]
    assert float(at.metric[0].value) == pytest.approx(results[shown].score.index["peak"], abs=0.01)
    assert float(at.metric[2].value) == pytest.approx(results[shown].score.index["top1"], abs=0.01)
    # the cohort table with a CSV download when there are several results
    cohort = next(d for d in at.dataframe if d.editing_mode == "read_only").value
    assert list(cohort["scan"]) == ["healthy demo", "lesion demo"]
    assert list(cohort.columns[4:10]) == ["index peak", "centile peak", "index top1", "centile top1", "index top5",
                                          "centile top5"]  # the model's headline index first
    assert "latent mask share" in cohort.columns
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download the table (CSV)" in labels
    assert {"restoration (.nii.gz)", "anomaly map (.nii.gz)", "z-map (.nii.gz)", "result (.json)"} <= set(labels)

    trip, over, native, brain_age = charts(at)
    assert sum(t["type"] == "heatmap" for t in trip["data"]) == 3
    # the brain age read from the restoration model's first stage, as mri-score and the report give it
    shown_age = results[shown].brain_age
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Brain-age gap"] == f"{shown_age.gap_years:+.1f} y"
    assert float(metrics["Brain-age gap centile"]) == pytest.approx(100 * shown_age.centile, abs=0.5)
    assert list(values(brain_age["data"][-1]["y"])) == pytest.approx([shown_age.gap_years])
    # the scan at its own resolution (the 6 mm demo scans: 32 voxels a side, not the 12 mm model grid)
    assert sum(t["type"] == "heatmap" for t in native["data"]) == 6
    assert values(native["data"][0]["z"]).shape == (32, 32)
    view = at.session_state["mri_views"][shown][1]
    assert [widget(at.slider, label).value for label in ("x: left → right", "y: posterior → anterior",
                                                           "z: inferior → superior")] == list(view.most_anomalous)
    assert over["data"][0]["type"] == over["data"][1]["type"] == "heatmap"
    z = values(over["data"][1]["z"])
    assert np.all(np.isnan(z) | (z >= 3.0))  # below the default threshold: hidden

    # the maps for download are in the scan's own space (the 6 mm demo grid, not the 12 mm model grid)
    for key in ("restoration", "anomaly", "zmap"):
        img = nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(results[shown].native_maps()[key])))
        assert img.shape == SCAN_GRID.shape and np.allclose(img.affine, SCAN_GRID.affine)

    # a report of the shown scan: index, centile, slices; HTML and PDF downloads
    button(at, f"Make a report of {shown} (HTML and PDF)").click().run()
    job = at.session_state["mri_report_job"]
    assert job.wait(TIMEOUT) == "done", job.error
    at.run()
    assert not at.exception
    assert job.result["pdf"].startswith(b"%PDF-") and b"Abnormality index" in job.result["html"]
    assert {"Download the report (HTML)", "Download the report (PDF)"} <= {b.proto.label for b in
                                                                          at.get("download_button")}

    # the known lesion of the lesion demo is outlined on the overlay on slices that hold it
    at.selectbox[0].set_value("lesion demo").run()
    assert not at.exception
    assert "lesion demo" in charts(at)[0]["layout"]["title"]["text"]
    lesion = at.session_state["mri_lesions"]["lesion demo"]
    assert lesion.any() and lesion.shape == results["lesion demo"].prepared.volume.shape
    widget(at.slider, "Slice").set_value(int(np.argwhere(lesion)[0, 2])).run()
    assert "known lesion" in [t.get("name") for t in charts(at)[1]["data"]]


def test_slice_slider_axis_radio_and_threshold_change_the_charts(mri_env):
    at = run_and_wait(mri_page())
    trip = charts(at)[0]
    title = trip["layout"]["title"]["text"]
    assert "axial slice" in title
    slider = widget(at.slider, "Slice")
    start = slider.value
    slider.set_value(0 if start else 1).run()
    assert not at.exception
    moved = charts(at)[0]
    assert moved["layout"]["title"]["text"] != title
    assert not np.array_equal(values(moved["data"][0]["z"]), values(trip["data"][0]["z"]))

    widget(at.radio, "View").set_value("coronal").run()
    assert not at.exception
    coronal = charts(at)[0]
    assert "coronal slice" in coronal["layout"]["title"]["text"]

    widget(at.slider, "z threshold").set_value(0.5).run()
    widget(at.slider, "Overlay opacity").set_value(0.3).run()
    over = charts(at)[1]
    assert over["data"][1]["zmin"] == 0.5 and over["data"][1]["opacity"] == 0.3


def test_cancel_keeps_the_scans_finished_before(mri_env, monkeypatch):
    import normcore.imaging.pipeline as pipeline

    real, release = pipeline.score_scan, threading.Event()

    def slow_second_scan(model, scan, age, sex, name=None, progress=None, **kwargs):
        if name == "lesion demo":  # waits (reporting progress) until the user cancels
            while not release.wait(0.05):
                progress.update("restoration", 0, 1)
        return real(model, scan, age, sex, name=name, progress=progress, **kwargs)

    monkeypatch.setattr(pipeline, "score_scan", slow_second_scan)
    at = mri_page()
    button(at, "Run restoration").click().run()
    job = at.session_state["mri_job"]
    assert job.running and button(at, "Run restoration").disabled
    assert at.get("progress")
    deadline = time.monotonic() + TIMEOUT
    while not (job.snapshot()["last"] or {}).get("stage", "").startswith("lesion demo"):  # the first scan is done
        assert job.running and time.monotonic() < deadline
        time.sleep(0.05)
    button(at, "Cancel").click().run()
    release.set()
    assert job.wait(TIMEOUT) == "cancelled"
    at.run()
    assert not at.exception and not at.error
    assert any("cancelled" in w.value for w in at.warning)
    assert list(at.session_state["mri_results"]) == ["healthy demo"]
    assert len(at.metric) == 7 and not button(at, "Run restoration").disabled


def test_bad_uploads_show_errors(mri_env):
    at = mri_page()
    at.radio[0].set_value("Upload scans").run()
    assert not at.exception
    at.file_uploader[0].upload("corrupt.nii.gz", b"not a nifti").run()
    assert not at.exception
    assert any("corrupt.nii.gz" in e.value for e in at.error)
    four_d = nib.Nifti1Image(np.random.default_rng(0).random((10, 10, 10, 3), dtype=np.float32), np.eye(4))
    at.file_uploader[0].set_value(("four_d.nii.gz", gzip.compress(four_d.to_bytes()), "application/gzip")).run()
    assert not at.exception
    assert any("4D" in e.value and "four_d.nii.gz" in e.value for e in at.error)
    assert button(at, "Run restoration").disabled


def test_upload_with_ages_runs(mri_env):
    at = mri_page()
    at.radio[0].set_value("Upload scans").run()
    scan = nib.Nifti1Image(mri_env["scan"].astype(np.float32), SCAN_GRID.affine)
    at.file_uploader[0].upload("sub-01_T1w.nii.gz", gzip.compress(scan.to_bytes()), "application/gzip").run()
    assert not at.exception and not at.error
    assert button(at, "Run restoration").disabled  # the age is still empty
    widget(at.checkbox, "Scans are already in MNI space (skip the affine registration)").check().run()
    editor = at.data_editor[0]
    at.session_state[editor.key] = {"edited_rows": {0: {"age": 52.0, "sex": "M"}}, "added_rows": [],
                                    "deleted_rows": []}
    at.number_input(key="mri_resamplings").set_value(2)  # and the centile's band over 2 resliced versions
    at = run_and_wait(at.run())
    assert not at.exception and not at.error
    result = at.session_state["mri_results"]["sub-01_T1w.nii.gz"]
    assert (result.age, result.sex) == (52.0, "M")
    assert result.band.n_resamplings == 2
    assert any("Resliced 2 times by a fraction of a voxel, the centile ranged" in c.value for c in at.caption)
    assert len(at.metric) == 7 and len(charts(at)) == 4  # slices, overlay, the scan at its own resolution, brain age
    # the quality gates beside the index; a failed gate labels the index unreliable
    gates = next(d for d in at.dataframe if "quality gate" in d.value.columns).value
    assert list(gates["quality gate"])[:3] == ["brain mask", "voxel size (mm)", "brain coverage"]
    unreliable = any("Index unreliable" in w.value for w in at.warning)
    assert result.quality and unreliable == (not result.index_reliable) == ("NO" in set(gates["passed"]))
    assert any("brain age is not calibrated" in w.value for w in at.warning) == unreliable


def test_without_a_model_the_page_says_how_to_train_one(mri_setup, monkeypatch):
    mri_setup["empty"].mkdir(exist_ok=True)
    monkeypatch.setenv("NORMDIFF_MRI_MODEL", str(mri_setup["empty"]))
    at = mri_page()
    assert not at.exception and not at.error
    assert any("mri-fit" in i.value for i in at.info)


def test_a_scan_scored_here_joins_a_subject_report_on_the_deviations_page(mri_env):
    from dashboard.demo import available_demo_models

    if "SHASH baseline (demo)" not in available_demo_models():
        pytest.skip("demo models not trained (benchmarks/train_demo.py)")
    at = with_fast_model(run_and_wait(mri_page()))
    at.switch_page("app_pages/deviations.py")
    at.run()
    for job in at.session_state["score_jobs"].values():  # the demo cohort is scored in the background
        assert job.wait(TIMEOUT) == "done", job.error
    at.run()
    assert not at.exception
    widget(at.selectbox, "Add this subject's MRI scan (scored on the MRI page) to the report").set_value(
        "lesion demo").run()
    next(b for b in at.button if b.label.startswith("Make a report of")).click().run()
    job = at.session_state["report_job"]
    assert job.wait(TIMEOUT) == "done", job.error
    html_text = job.result["html"].decode()
    assert "<h2>MRI</h2>" in html_text and "MRI scan</th><td>lesion demo" in html_text
    assert html_text.count("data:image/png;base64,") == 3  # profile, curves, MRI slices


def test_whole_brain_deviation_and_counterfactual_age_panels(mri_env):
    at = run_and_wait(mri_page())
    shown = at.session_state["mri_scan"]
    assert not charts(at)[4:]  # nothing of the diffusion autoencoder before its button
    # the panel says the score is exploratory, and what its card measured (the tiny test model's: nothing)
    assert any("treat it as exploratory" in c.value and "no held-out measurement" in c.value for c in at.caption)
    button(at, f"Analyse {shown} with the diffusion autoencoder").click().run()
    job = at.session_state["mri_latent_job"]
    assert job.wait(TIMEOUT) == "done", job.error
    at.run()
    assert not at.exception and not at.error
    latent = job.result
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Whole-brain deviation centile"]) == pytest.approx(100 * latent.deviation.centile, abs=0.5)
    assert float(metrics["Multivariate z"]) == pytest.approx(latent.deviation.multivariate_z, abs=0.01)
    profile, position, slices, ventricles, tissue = charts(at)[4:]
    assert values(profile["data"][0]["y"]).size == 4  # one bar per semantic dimension
    assert position["data"][-1]["name"] == "this scan"
    assert sum(t["type"] == "heatmap" for t in slices["data"]) == 3
    assert [t["name"] for t in ventricles["data"]][-2:] == ["this brain at other ages", "own age"]
    slider = widget(at.select_slider, "Show the brain at age")
    ages = latent.counterfactuals.ages
    assert slider.value in ages and len(ages) > 2 and all(a % 5 == 0 for a in ages)  # every 5 years of training
    before = values(slices["data"][1]["z"])
    other = next(a for a in ages if a != slider.value)
    slider.set_value(other).run()
    assert not at.exception
    moved = charts(at)[6]
    assert f"at {other:g} (counterfactual)" in [a["text"] for a in moved["layout"]["annotations"]]
    assert not np.array_equal(values(moved["data"][1]["z"]), before)
    assert "whole-brain result (.json)" in [b.proto.label for b in at.get("download_button")]


def test_whole_brain_analysis_can_be_cancelled(mri_env, monkeypatch):
    from normcore.imaging.diffae import NormativeDiffusionAutoencoder as DAE

    release = threading.Event()

    def slow_counterfactual(self, volume, age, sex, at_ages, mode="both", age_guidance=None, progress=None):
        while not release.wait(0.05):  # waits (reporting progress) until the user cancels
            progress.update("inversion", 0, 2)
        progress.update("counterfactuals", 1, 2)  # the next step's report is where a cancel takes effect

    monkeypatch.setattr(DAE, "counterfactual", slow_counterfactual)
    at = run_and_wait(mri_page())
    shown = at.session_state["mri_scan"]
    button(at, f"Analyse {shown} with the diffusion autoencoder").click().run()
    job = at.session_state["mri_latent_job"]
    assert job.running and at.get("progress")
    button(at, "Cancel").click().run()
    release.set()
    assert job.wait(TIMEOUT) == "cancelled"
    at.run()
    assert not at.exception and not at.error
    assert any("whole-brain analysis was cancelled" in w.value for w in at.warning)
    assert not button(at, f"Analyse {shown} with the diffusion autoencoder").disabled  # it can be run again
