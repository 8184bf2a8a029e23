"""Report and export jobs and their download panel, shared by the Deviations and MRI pages.

Each ``make_*`` runs on a job thread (:class:`normcore.jobs.Job`) and returns ``{"downloads": [(button label,
bytes, file name, MIME type), ...]}`` (reports: HTML and PDF); :func:`download_panel` shows the job's progress,
then its downloads.
"""

from __future__ import annotations

import re

import streamlit as st

from normcore.reports import cohort_report, render, render_cohort, subject_report
from normcore.reports.mri import findings_from_result
from normcore.reports.subject import mri_subject_report
from normcore.tabular.pcntoolkit_export import pcntoolkit_tables, pcntoolkit_zip_bytes

ss = st.session_state


def file_stem(name: str) -> str:
    """A name safe as a download's file name (scan names carry spaces, brackets and extensions)."""
    name = re.sub(r"\.nii(\.gz)?$", "", str(name))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "report"


def _done(report_html: str, pdf: bytes, label: str, stem: str) -> dict:
    html_bytes = report_html.encode()
    return {"html": html_bytes, "pdf": pdf,
            "downloads": [(f"Download the {label} (HTML)", html_bytes, f"{stem}.html", "text/html"),
                          (f"Download the {label} (PDF)", pdf, f"{stem}.pdf", "application/pdf")]}


def make_report(model, scores, subject, id_col, mri_result=None, progress=None) -> dict:
    """A subject report (with the subject's scored scan when given): content, then HTML and PDF."""
    mri = findings_from_result(mri_result) if mri_result is not None else None
    html_text, pdf = render(subject_report(model, scores, subject, id_col=id_col, mri=mri))
    return _done(html_text, pdf, "report", f"report-{file_stem(subject)}")


def make_mri_report(result, model_name: str, n_train: int | None, age_range: tuple[float, float], view=None,
                    progress=None) -> dict:
    """A report of one scored scan alone (no IDP table); ``view``: its native view when already made."""
    report = mri_subject_report(findings_from_result(result, view), result.age, result.sex, model_name, n_train,
                                age_range)
    html_text, pdf = render(report)
    return _done(html_text, pdf, "report", f"report-{file_stem(result.name)}")


def make_cohort_report(model, scores, group_col, control_value, id_col, progress=None) -> dict:
    """The cohort report (patients vs controls)."""
    html_text, pdf = render_cohort(cohort_report(model, scores, group_col, control_value, id_col=id_col))
    return _done(html_text, pdf, "cohort report", "cohort-report")


def make_pcntoolkit_export(model, table, scores, id_col, name: str = "test", progress=None) -> dict:
    """The Z, centiles and statistics tables in PCNtoolkit's layout, zipped (``score --format pcntoolkit``)."""
    tables = pcntoolkit_tables(model, table, scores, id_col=id_col, progress=progress)
    return {"downloads": [("Download for PCNtoolkit (zip of Z, centiles, statistics)", pcntoolkit_zip_bytes(
        tables, name), f"pcntoolkit-{file_stem(name)}.zip", "application/zip")]}


def download_panel(job_name: str, key: tuple) -> None:
    """Progress of the job ``ss[job_name]`` started for ``key`` (its stage and share done, where the work reports
    them) with a Cancel button, then its downloads (or why there are none).

    Only a running job's panel polls (a fragment rerun every second, which reruns the page when the job ends): the
    Deviations page's three panels had polled forever, each poll followed by Streamlit's full garbage collection,
    which starved report jobs (BENCHMARKS.md, 2026-12-07)."""
    job = ss.get(job_name)
    if job is None or ss.get(f"{job_name}_for") != key:
        return
    if job.running:
        st.fragment(run_every=1.0)(_job_progress)(job_name)
    else:
        _job_outcome(job_name, job)


def _job_progress(job_name: str) -> None:  # run as a fragment: its id includes its place, so it serves every panel
    job = ss[job_name]
    if not job.running:
        st.rerun()  # the whole page, which shows the outcome without polling
    snap = job.snapshot()
    stage = (snap["last"] or {}).get("stage")
    st.progress(snap["fraction"], text=f"Working on it: {stage}…" if stage else
                "Working on it (reports and exports sample the model)…")
    if st.button("Cancel", key=f"{job_name}_cancel"):
        job.cancel()


def _job_outcome(job_name: str, job) -> None:
    if job.status == "cancelled":
        st.warning("Cancelled: nothing was made.")
        return
    if job.status != "done":
        st.error(job.error or f"the report was {job.status}")
        return
    downloads = job.result["downloads"]
    for col, (label, data, file_name, mime) in zip(st.columns(len(downloads)), downloads, strict=True):
        col.download_button(label, data, file_name=file_name, mime=mime, key=f"{job_name}:{file_name}")
