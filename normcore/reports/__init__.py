"""Reports a clinician can take away: per-subject deviation reports as self-contained HTML or PDF."""

from normcore.reports.render import render, to_html, to_pdf_bytes, write_html, write_pdf
from normcore.reports.subject import SubjectReport, centile_band, subject_report

__all__ = ["SubjectReport", "centile_band", "render", "subject_report", "to_html", "to_pdf_bytes", "write_html",
           "write_pdf"]
