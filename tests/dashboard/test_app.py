"""Headless app tests (streamlit.testing AppTest) of every page, reading the plotly JSON specs."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.demo import available_demo_models
from tests.conftest import ROOT
from tests.dashboard.conftest import with_fast_model, work_until_cancelled

pytestmark = pytest.mark.skipif(not available_demo_models(),
                                reason="demo models not trained (benchmarks/train_demo.py)")
TIMEOUT = 600  # an upper bound for a slow shared CI box, not a timing assertion


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def goto(at, page: str) -> AppTest:
    at.switch_page(f"app_pages/{page}.py")
    return at.run()


def test_start_page_shows_demo_centile_curves():
    at = app().run()
    assert not at.exception
    spec = charts(at)[0]
    names = [t.get("name") for t in spec["data"]]
    assert "median" in names and "0.05–0.95" in names
    assert "idp_01" in spec["layout"]["title"]["text"]


def test_the_starting_demo_model_can_be_chosen(monkeypatch):
    monkeypatch.setenv("NORMDIFF_DEMO_MODEL", "demo-shash-baseline")
    assert app().run().session_state.model_name == "SHASH baseline (demo)"
    monkeypatch.setenv("NORMDIFF_DEMO_MODEL", "no-such-model")  # unknown: the first shipped one
    assert app().run().session_state.model_name == next(iter(available_demo_models()))


def test_every_page_renders_without_exception():
    at = app().run()
    for page in ("data", "fit", "centiles", "deviations", "dependence", "calibration"):
        goto(at, page)
        assert not at.exception, page
        assert not at.error, (page, [e.value for e in at.error])
    for job in at.session_state["score_jobs"].values():  # scoring started in the background: not left running
        job.cancel()
        assert job.wait(TIMEOUT) in ("cancelled", "done")


def test_centiles_page_draws_groups_and_hover():
    at = goto(with_fast_model(app().run()), "centiles")
    first = charts(at)[0]  # drawn at once, before the subjects are scored in the background
    assert "median" in [t.get("name") for t in first["data"]]
    for job in at.session_state["score_jobs"].values():
        assert job.wait(TIMEOUT) == "done"
    spec = charts(at.run())[0]
    names = [t.get("name") for t in spec["data"]]
    assert {"control", "patient", "median"} <= set(names)
    pts = next(t for t in spec["data"] if t.get("name") == "patient")
    assert "z = " in pts["hovertemplate"]


def test_dependence_page_three_panels():
    at = goto(app().run(), "dependence")
    spec = charts(at)[0]
    assert sum(t["type"] == "heatmap" for t in spec["data"]) == 3
    assert len(at.metric) == 2


def test_upload_and_bad_uploads_show_messages(tmp_path):
    at = goto(app().run(), "data")
    good = pd.DataFrame({"age": [20, 30, 40, 50] * 10, "sex": [0, 1] * 20, "x1": range(40), "x2": range(40, 80)})
    at.file_uploader[0].upload("good.csv", good.to_csv(index=False).encode(), "text/csv").run()
    assert not at.exception
    assert "upload: good.csv" in at.session_state.data_name and list(at.session_state.data.columns)[0] == "age"
    # other names for age and sex: a numeric sex column is a covariate, not an IDP
    named = good.rename(columns={"age": "Age_at_scan", "sex": "Gender"})[["x1", "Age_at_scan", "Gender", "x2"]]
    at.file_uploader[0].upload("named.csv", named.to_csv(index=False).encode(), "text/csv").run()
    m = at.session_state.mapping
    assert (m.age, m.covariates, m.idps) == ("Age_at_scan", ["Gender"], ["x1", "x2"])
    # an age column of no known name is not the subject IDs, though they come first (it was, and clashed with them)
    unnamed = good.rename(columns={"age": "years"}).assign(eid=range(1000, 1040))[["eid", "years", "sex", "x1", "x2"]]
    at.file_uploader[0].upload("unnamed.csv", unnamed.to_csv(index=False).encode(), "text/csv").run()
    m = at.session_state.mapping
    assert (m.id_col, m.age, m.idps) == ("eid", "years", ["x1", "x2"])
    for content in (b"\xff\xfe\x00", b"age,x\n1,2\n3", b"a;b\n1;2\n", b"onecolumn\n1\n"):
        at.file_uploader[0].upload("bad.csv", content, "text/csv").run()
        assert not at.exception
    at.file_uploader[0].upload("empty.csv", b"", "text/csv").run()
    assert any("empty" in e.value for e in at.error)
    # a table without the model's columns: pages say so instead of failing
    at.file_uploader[0].upload("other.csv", b"years,score\n1,2\n3,4\n", "text/csv").run()
    goto(at, "deviations")
    assert not at.exception and any("lacks column" in e.value for e in at.error)


def test_short_fit_through_the_fit_page_then_centiles():
    at = goto(app().run(), "data")
    at.radio[0].set_value("Generate a synthetic cohort").run()
    at.number_input[0].set_value(300)
    at.number_input[1].set_value(3)
    at.number_input[2].set_value(20)
    at.button[0].click().run()
    assert at.session_state.data_name.startswith("synthetic: N=300")
    # a site of one subject, whom the page's held-out split (seed 0, 20%) would draw first: it must still be fitted
    data, mapping = at.session_state.data.copy(), at.session_state.mapping
    controls = mapping.controls(data)
    data["site"] = "main"
    data.loc[controls.index[np.random.default_rng(0).permutation(len(controls))[0]], "site"] = "one subject"
    at.session_state.data = data
    mapping.covariates = ["sex", "site"]
    goto(at, "fit")
    at.number_input[0].set_value(2)  # max epochs
    at.number_input[1].set_value(200)  # samples per point
    at.number_input[4].set_value(16)  # network width (advanced)
    tails = next(s for s in at.selectbox if s.label.startswith("Extreme z-scores"))
    tails.set_value(next(o for o in tails.options if o.startswith("light-tailed")))
    next(b for b in at.button if b.label == "Start fitting").click().run()
    job = at.session_state.job
    assert job.wait(300) == "done", job.error
    at.run()
    assert not at.exception
    assert at.session_state.model_name.startswith("fitted: film-mlp")
    assert at.session_state.model.idps == ["idp_01", "idp_02", "idp_03"]
    assert at.session_state.model.tail_scale == "residual"  # the Advanced option reaches the model
    assert any(c.value.startswith("Denoiser: ") for c in at.caption)  # what the fit decided, as `fit` prints it
    assert "one subject" in at.session_state.model.levels_["site"]
    goto(at, "centiles")
    assert not at.exception and charts(at)
    goto(at, "deviations")  # the whole table, held-out rows and the one-subject site included, scores
    assert not at.exception and not at.error


def started_then_cancelled(at: AppTest, button: str, job_name: str, cancel_key: str) -> AppTest:
    """Click ``button``; its background job ``session_state[job_name]`` shows a progress bar; its Cancel button
    (``cancel_key``) stops it; the page rerun after the cancel is returned."""
    next(b for b in at.button if b.label == button).click().run()
    job = at.session_state[job_name]
    assert job.running and at.get("progress") and not at.exception
    at.button(key=cancel_key).click().run()
    assert job.wait(TIMEOUT) == "cancelled"
    return at.run()


def test_calibration_page_runs_checks_and_draws_pit_histogram():
    at = goto(with_fast_model(app().run()), "calibration")
    assert not at.exception and not charts(at)  # nothing is computed before the button
    next(b for b in at.button if b.label == "Run the calibration checks").click().run()
    assert not at.exception
    assert at.session_state["calib_job"].wait(TIMEOUT) == "done", at.session_state["calib_job"].error
    at.run()  # as the polling fragment does when the checks end
    assert not at.exception and not at.error
    labels = [mtr.label for mtr in at.metric]
    assert "Coverage 95% (mean over IDPs)" in labels
    coverage = float(at.metric[labels.index("Coverage 95% (mean over IDPs)")].value)
    assert 0.85 < coverage <= 1.0
    spec = charts(at)[0]
    assert spec["data"][0]["type"] == "histogram" and "PIT of idp_01" in spec["layout"]["title"]["text"]


def test_calibration_checks_run_in_the_background_and_can_be_cancelled(monkeypatch):
    import dashboard.state

    monkeypatch.setattr(dashboard.state, "calibration_checks", work_until_cancelled("scoring"))
    at = goto(with_fast_model(app().run()), "calibration")
    at = started_then_cancelled(at, "Run the calibration checks", "calib_job", "calib_cancel")
    assert not at.exception and any("cancelled" in w.value for w in at.warning) and not at.metric


def test_sessions_never_modify_the_shared_cached_model():
    """Bug: the page set an attribute (a cache token) on the model returned by st.cache_resource, which
    every session shares; the token now lives in the session's own state."""
    at = goto(app().run(), "centiles")
    assert not at.exception
    model = at.session_state.model
    assert set(vars(model)) == set(vars(type(model).load(available_demo_models()["FiLM-MLP (demo)"])))
    assert at.session_state.model_token and at.session_state.model_token.endswith(
        str((available_demo_models()["FiLM-MLP (demo)"] / "model.json").stat().st_mtime_ns))


REFERENCE = ROOT / "models" / "fcon1000-film-mlp"


def site_table(n: int = 40) -> pd.DataFrame:
    """A new site's table in its own naming: drawn from the shipped reference at one of its sites, then
    relabelled (no site column, sex as F/M in a "Gender" column, other column names), with patients shifted in one
    IDP."""
    from normcore import load_model

    ref = load_model(REFERENCE, device="cpu")
    site = ref.levels_["site"][0]
    cov = pd.DataFrame({"age": [22.0 + (i % 10) for i in range(n)], "sex": [str(i % 2) for i in range(n)],
                        "site": site})
    values = ref.sample(cov, n=1, seed=3)
    table = values.drop(columns=["sample", "site"]).rename(columns={"age": "Age", "sex": "Gender"})
    table["Gender"] = table["Gender"].map({"0": "F", "1": "M"})
    table.insert(0, "subject_id", [f"s{i:03d}" for i in range(n)])
    table["group"] = ["control"] * (n - 10) + ["patient"] * 10
    table.loc[table.group == "patient", "Left-Hippocampus"] *= 0.8
    return table.rename(columns={"Left-Hippocampus": "left_hippocampus", "3rd-Ventricle": "3rd_ventricle"})


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the fcon1000 reference is not in models/")
def test_score_my_cohort_adapts_the_reference_and_every_page_uses_it():
    at = app().run()
    at.session_state["cohort_raw"] = site_table()
    at.session_state["cohort_name"] = "my_site.csv"
    goto(at, "cohort")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "fcon1000" in at.selectbox[0].value
    assert any("of 208 matched automatically" in e.label for e in at.expander)
    assert at.selectbox(key="cohort_cov_site").value.startswith("(all rows are one site")
    assert at.selectbox(key="cohort_cov_sex").value == "Gender"  # found by another name, not the first column
    at.button[0].click().run()
    job = at.session_state["cohort_job"]
    assert job.wait(TIMEOUT) == "done", job.error
    at.run()
    assert not at.exception
    assert at.session_state.model_name.startswith("fcon1000 healthy reference (FiLM-MLP) adapted to my_site")
    assert "my_site" in at.session_state.model.levels_["site"]
    assert at.session_state.mapping.id_col == "subject_id" and at.session_state.mapping.group_col == "group"
    assert len(at.session_state.heldout["rows"]) == 6  # 20% of the 30 controls
    assert {m.label for m in at.metric} >= {"Held-out controls", "Coverage of the 95% interval"}
    goto(at, "calibration")
    assert not at.exception and any("held out of this model" in s.value for s in at.success)


def test_two_sessions_cannot_see_each_others_saved_models():
    alice = goto(app().run(), "fit")
    alice.text_input[0].set_value("alice-private")
    next(b for b in alice.button if b.label == "Save").click().run()
    assert not alice.exception and any("Saved as 'alice-private'" in s.value for s in alice.success)
    loads = lambda at: next(s for s in at.selectbox if s.label == "Load a model").options  # noqa: E731
    assert "mine: alice-private" in loads(alice)
    bob = goto(app().run(), "fit")
    assert bob.session_state.session_key != alice.session_state.session_key
    assert not [o for o in loads(bob) if "alice-private" in o]
    next(b for b in alice.button if b.label == "Save").click().run()  # the same name again: refused
    assert any("already saved" in e.value for e in alice.error)
    next(b for b in alice.button if b.label == "Publish").click().run()  # published: now every session sees it
    assert "shared: alice-private" in loads(goto(bob, "fit"))


def test_a_reloaded_page_offers_to_restore_the_last_table_and_model():
    first = goto(app().run(), "data")
    table = pd.DataFrame({"age": [20.0, 30, 40, 50] * 10, "sex": [0, 1] * 20, "x1": range(40), "x2": range(40, 80)})
    first.file_uploader[0].upload("mine.csv", table.to_csv(index=False).encode(), "text/csv").run()
    key = first.session_state.session_key
    assert first.query_params["session"] == [key] or first.query_params["session"] == key
    reloaded = app()
    reloaded.query_params["session"] = key
    reloaded.run()
    assert not reloaded.exception and reloaded.session_state.session_key == key
    assert reloaded.session_state.data_name.startswith("demo")  # nothing is restored without asking
    next(b for b in reloaded.button if b.label == "Restore them").click().run()
    assert not reloaded.exception
    assert reloaded.session_state.data_name == "upload: mine.csv"
    assert list(reloaded.session_state.data.x2) == list(range(40, 80))
    other = app().run()  # a new session (no key in its URL) is offered nothing
    assert not [b for b in other.button if b.label == "Restore them"]


def test_a_table_with_validation_errors_is_not_scored():
    at = goto(app().run(), "data")
    bad = pd.DataFrame({"age": [20.0, 30, 200, 50] * 10, "sex": [0, 1] * 20,
                        **{f"idp_{i:02d}": range(40) for i in range(1, 11)}})
    at.file_uploader[0].upload("bad_age.csv", bad.to_csv(index=False).encode(), "text/csv").run()
    goto(at, "deviations")
    assert not at.exception
    assert any("cannot be scored until it is fixed" in e.value and "impossible ages" in e.value for e in at.error)
    assert not at.session_state.score_jobs  # nothing was started


def test_the_sidebar_shows_the_table_the_page_just_made_active():
    """Bug: the sidebar was drawn before the page ran, so it showed the previous table after an upload."""
    at = goto(app().run(), "data")
    table = pd.DataFrame({"age": [20.0, 30, 40, 50] * 10, "sex": [0, 1] * 20, "x1": range(40), "x2": range(40, 80)})
    at.file_uploader[0].upload("fresh.csv", table.to_csv(index=False).encode(), "text/csv").run()
    assert "upload: fresh.csv" in [c.value for c in at.sidebar.caption]
    goto(at, "change")  # a page that stops early (no visit column) still shows the active table and model
    assert (at.error or at.info) and "upload: fresh.csv" in [c.value for c in at.sidebar.caption]


def test_a_saved_model_can_be_overlaid_on_the_centile_page():
    """Bug: the overlay list offered the demo models only, not the user's saved ones."""
    at = goto(app().run(), "fit")
    at.text_input[0].set_value("for-overlay")
    next(b for b in at.button if b.label == "Save").click().run()
    goto(at, "centiles")
    assert "mine: for-overlay" in next(s for s in at.selectbox if s.label == "Overlay a second model").options


def test_an_excel_upload_is_explained():
    at = goto(app().run(), "data")
    at.file_uploader[0].upload("table.xlsx", b"PK\x03\x04[Content_Types].xml", "application/vnd.ms-excel").run()
    assert not at.exception and any("Save As > CSV UTF-8" in e.value for e in at.error)


def test_change_between_visits_page_scores_pairs_and_draws_a_trajectory():
    from dashboard.demo import demo_cohort
    from dashboard.state import Mapping

    at = app().run()
    first = demo_cohort().head(40).assign(visit=1)
    second = first.assign(visit=2, age=first.age + 2.0)
    table = pd.concat([first, second], ignore_index=True)
    at.session_state["data"] = table
    at.session_state["data_name"] = "two visits"
    at.session_state["mapping"] = Mapping("age", ["sex"], [c for c in table.columns if c.startswith("idp_")],
                                          "sub_id", "group", "control")
    goto(at, "change")
    assert not at.exception and at.selectbox[0].value == "visit"
    next(b for b in at.button if b.label == "Compute change scores").click().run()
    assert at.session_state["change_job"].wait(TIMEOUT) == "done", at.session_state["change_job"].error
    at.run()
    assert not at.exception, at.exception
    assert any("40 pairs of consecutive visits" in s.value for s in at.success)
    spec = charts(at)[0]
    assert spec["data"][-1]["name"] == "visits"


def scored(at) -> AppTest:
    """Wait for the session's background scoring jobs, then rerun the page (as its polling fragment does)."""
    for job in at.session_state["score_jobs"].values():
        assert job.wait(TIMEOUT) == "done", job.error
    return at.run()


def test_deviations_page_heatmap_downloads_and_reports(monkeypatch):
    import normcore.metrics

    tables = []  # the patients-vs-controls table (a bootstrap per score) is made once, not on every rerun
    monkeypatch.setattr(normcore.metrics, "separation_table", lambda *a, _real=normcore.metrics.separation_table,
                        **k: tables.append(1) or _real(*a, **k))
    at = goto(with_fast_model(app().run()), "deviations")
    assert not at.exception
    at = scored(at)
    specs = charts(at)
    heat = specs[0]["data"][0]
    assert heat["type"] == "heatmap" and heat["zmid"] == 0
    assert any(t["type"] == "bar" for s in specs for t in s["data"])
    assert at.get("download_button")

    # a subject report
    next(b for b in at.button if b.label.startswith("Make a report of")).click().run()
    job = at.session_state["report_job"]
    assert job.wait(TIMEOUT) == "done", job.error
    at.run()
    assert not at.exception
    assert job.result["pdf"].startswith(b"%PDF-") and b"Research use only" in job.result["html"]
    labels = [b.label for b in at.get("download_button")]
    assert {"Download the report (HTML)", "Download the report (PDF)"} <= set(labels)

    # a cohort report
    next(b for b in at.button if b.label == "Make a cohort report (HTML and PDF)").click().run()
    job = at.session_state["cohort_report_job"]
    assert job.wait(TIMEOUT) == "done", job.error
    at.run()
    assert not at.exception and job.result["pdf"].startswith(b"%PDF-")
    assert "Download the cohort report (PDF)" in [b.label for b in at.get("download_button")]

    # the PCNtoolkit tables, zipped
    next(b for b in at.button if b.label == "Prepare the PCNtoolkit tables").click().run()
    job = at.session_state["pcn_job"]
    assert job.wait(TIMEOUT) == "done", job.error
    at.run()
    assert not at.exception
    (label, data, file_name, _), = job.result["downloads"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["Z_test.csv", "centiles_test.csv", "statistics_test.csv"]
        z = pd.read_csv(archive.open("Z_test.csv"))
    assert list(z.columns[:2]) == ["observations", "subject_ids"] and len(z) == len(at.session_state.data)
    assert label in [b.label for b in at.get("download_button")]

    # while a report or export runs: a progress bar and a Cancel button; a cancel says so and leaves no download
    import dashboard.reports

    monkeypatch.setattr(dashboard.reports, "make_pcntoolkit_export", work_until_cancelled("centiles"))
    at = started_then_cancelled(at, "Prepare the PCNtoolkit tables", "pcn_job", "pcn_job_cancel")
    assert not at.exception and any("Cancelled" in w.value for w in at.warning)
    assert label not in [b.label for b in at.get("download_button")]
    assert len(tables) == 1


def test_deviations_scoring_shows_progress_and_can_be_cancelled_and_restarted(monkeypatch):
    """The page never blocks on scoring: it shows a progress bar with a Cancel button; a cancel says so and offers
    to score again, and scoring again starts a new job."""
    import dashboard.state

    monkeypatch.setattr(dashboard.state, "_score_table", work_until_cancelled("sample"))
    at = goto(with_fast_model(app().run()), "deviations")
    assert not at.exception and not at.get("plotly_chart")
    (job,) = at.session_state["score_jobs"].values()
    assert job.running and at.get("progress")
    next(b for b in at.button if b.label == "Cancel scoring").click().run()
    assert job.wait(TIMEOUT) == "cancelled"
    at.run()
    assert not at.exception and any("cancelled" in w.value for w in at.warning)
    assert not at.get("plotly_chart") and job is next(iter(at.session_state["score_jobs"].values()))
    next(b for b in at.button if b.label == "Score again").click().run()
    (again,) = at.session_state["score_jobs"].values()
    assert again is not job and again.running and not at.exception
    again.cancel()
    assert again.wait(TIMEOUT) == "cancelled"
