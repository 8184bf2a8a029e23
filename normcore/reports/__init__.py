"""Reports a clinician can take away: per-subject and cohort deviation reports as self-contained HTML or PDF."""

from normcore.plotting.centile_bands import centile_band
from normcore.reports.cohort import CohortReport, cohort_report
from normcore.reports.render import render, render_cohort, to_html, to_pdf_bytes, write_html, write_pdf
from normcore.reports.subject import SubjectReport, subject_report

__all__ = ["CohortReport", "SubjectReport", "centile_band", "cohort_report", "render", "render_cohort",
           "subject_report", "to_html", "to_pdf_bytes", "write_html", "write_pdf"]
