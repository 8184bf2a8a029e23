"""A subject or cohort report rendered as one self-contained HTML file (figures embedded as PNG; no request leaves
the machine when it opens) or as a PDF of the same content, both with matplotlib. A subject's PDF has three pages
(summary and most deviant IDPs, the grouped deviation profile, centile curves), plus one for an MRI scan; a report
of a scan alone has one."""

from __future__ import annotations

import base64
import html
import io
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages

from normcore._utils.atomic import write_atomic
from normcore.plotting.centile_bands import BAND_COLOURS
from normcore.plotting.report import (
    cohort_effects_figure,
    curves_figure,
    mri_figure,
    multivariate_by_group_figure,
    profile_figure,
)
from normcore.reports.cohort import CohortReport
from normcore.reports.subject import SubjectReport

PDF_PAGES = 3


def _png(fig, close: bool = True) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    if close:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _fmt(v: float, digits: int = 3) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


def _top_rows(report: SubjectReport) -> list[list[str]]:
    return [[r.idp, _fmt(r.value, 4), f"{100 * r.centile:.1f}", f"{r.z:+.2f}",
             f"{_fmt(r.expected_5th, 4)} – {_fmt(r.expected_95th, 4)}"] for r in report.top.itertuples()]


TOP_HEADER = ["IDP", "value", "centile", "z", "expected 5th–95th (same age and sex)"]


def multivariate_line(report: SubjectReport) -> str:
    m = report.multivariate
    if not np.isfinite(m["d2"]):
        return "Multivariate deviation: not computed."
    held = (f"; above {m['held_out_centile']:.0f}% of the reference's {m['held_out_n']} held-out healthy people"
            if "held_out_n" in m else "")
    where = (f"among new healthy people, calibrated on {m['calibrated_rows']}" if "calibrated_rows" in m
             else "under the model")
    return (f"Multivariate deviation over {m['n_idps']} IDPs: d² = {m['d2']:.1f}, z = {m['z']:.2f} "
            f"(centile {m['centile']:.1f} {where}{held}).")


def _figures(report: SubjectReport) -> dict:
    """The report's figures by name (profile and curves with IDPs; mri with a scan), each drawn once."""
    figures = {}
    if report.has_idps:
        figures["profile"], figures["curves"] = profile_figure(report), curves_figure(report)
    if report.mri is not None:
        figures["mri"] = mri_figure(report.mri)
    return figures


def pdf_page_count(report: SubjectReport) -> int:
    """Pages of the report's PDF: :data:`PDF_PAGES` with IDPs, one more for an MRI scan (one alone)."""
    return (PDF_PAGES if report.has_idps else 1) + (report.mri is not None and report.has_idps)


def to_html(report: SubjectReport) -> str:
    """The report as one HTML document (inline CSS, figures as data: URLs; nothing is fetched)."""
    return _html(report, {k: _png(f) for k, f in _figures(report).items()})


def _mri_html(report: SubjectReport, png: str | None) -> str:
    if report.mri is None:
        return ""
    esc = html.escape
    m = report.mri
    warnings = "".join(f"<li>{esc(w)}</li>" for w in m.warnings)
    return (f"<h2>MRI</h2><p>{esc(m.index_line())} {esc(m.share_line())}</p>"
            + (f"<p>Quality:</p><ul>{warnings}</ul>" if warnings else "")
            + f'<img alt="MRI slices through the most anomalous region" src="data:image/png;base64,{png}">')


def _html(report: SubjectReport, pngs: dict[str, str]) -> str:
    esc = html.escape
    header = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in report.header.items())
    flags = "".join(f"<li>{esc(f)}</li>" for f in report.flags) or "<li>none</li>"
    tabular = ""
    if report.has_idps:
        rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in _top_rows(report))
        bands = "".join(f'<span class="band" style="background:{BAND_COLOURS[r.band]}"></span>' for r in
                        report.top.itertuples())
        tabular = f"""<h2>Most deviant IDPs</h2><p>{bands}</p>
<table><tr>{''.join(f'<th>{esc(h)}</th>' for h in TOP_HEADER)}</tr>{rows}</table>
<h2>Deviation profile</h2>
<img alt="deviation profile" src="data:image/png;base64,{pngs['profile']}">
<h2>Centile curves of the most deviant IDPs</h2>
<img alt="centile curves" src="data:image/png;base64,{pngs['curves']}">
<p><small>Centile bands: below 1st, 1st–5th, 5th–95th, 95th–99th, above 99th (ColorBrewer RdBu, colour-blind
safe).</small></p>"""
    summary = f"<p>{esc(multivariate_line(report))}</p>" if report.has_idps else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Deviation report: {esc(report.subject)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto;color:#222}}
table{{border-collapse:collapse;font-size:0.9em}}td,th{{border:1px solid #ccc;padding:0.2em 0.5em;text-align:left}}
.disclaimer{{background:#fff3cd;padding:0.5em;border:1px solid #e0c36a}}.band{{display:inline-block;width:1em;
height:0.8em;margin-right:2px}}img{{max-width:100%}}</style></head><body>
<h1>Normative deviation report</h1>
<p class="disclaimer">{esc(report.disclaimer)}</p>
<table>{header}</table>
<h2>Summary</h2>{summary}
<h3>Flags</h3><ul>{flags}</ul>
{tabular}
{_mri_html(report, pngs.get('mri'))}
<p><small>Made by normcore on this machine.</small></p>
</body></html>
"""


def write_html(report: SubjectReport, path: str | Path) -> Path:
    text = to_html(report)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def to_pdf_bytes(report: SubjectReport) -> bytes:
    """The report as a PDF (:func:`pdf_page_count` pages) in memory."""
    return _pdf(report, _figures(report))


def render(report: SubjectReport) -> tuple[str, bytes]:
    """Both renderings (HTML text, PDF bytes), drawing each figure once."""
    figures = _figures(report)
    html_text = _html(report, {k: _png(fig, close=False) for k, fig in figures.items()})
    return html_text, _pdf(report, figures)


def _pdf(report: SubjectReport, figures: dict) -> bytes:
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": f"Deviation report: {report.subject}", "Creator": "normcore"}) as pdf:
        fig = plt.figure(figsize=(8.27, 11.69))
        lines = [f"{k}: {v}" for k, v in report.header.items()]
        if report.has_idps:
            lines += ["", multivariate_line(report)]
        lines += ["", "Flags:"] + [f"  • {f}" for f in report.flags or ["none"]]
        lines = [w for line in lines for w in (textwrap.wrap(line, 105, subsequent_indent="    ") or [""])]
        fig.text(0.06, 0.975, "\n".join(textwrap.wrap(report.disclaimer, 130)), va="top", fontsize=7,
                 color="#8a6d00")
        fig.text(0.06, 0.94, "Normative deviation report", va="top", fontsize=13, fontweight="bold")
        fig.text(0.06, 0.91, "\n".join(lines), va="top", fontsize=8.5, family="sans-serif")
        top = 0.89 - 0.0125 * len(lines) - 0.03
        if report.has_idps:
            ax = fig.add_axes([0.06, max(0.05, top - 0.45), 0.88, 0.45])
            ax.axis("off")
            ax.set_title("Most deviant IDPs", fontsize=10, loc="left")
            table = ax.table(cellText=_top_rows(report), colLabels=TOP_HEADER, loc="upper left", cellLoc="left",
                             colWidths=[0.36, 0.12, 0.1, 0.08, 0.34])
            table.auto_set_font_size(False)
            table.set_fontsize(7)
            for i, r in enumerate(report.top.itertuples(), start=1):
                table[i, 2].set_facecolor(BAND_COLOURS[r.band])
                if r.band in ("below 1st", "above 99th"):  # dark fills: white text keeps the number legible
                    table[i, 2].get_text().set_color("white")
            pdf.savefig(fig)
            plt.close(fig)
            fig = None
        if report.mri is not None:
            mri = figures.pop("mri")
            page = fig if fig is not None else plt.figure(figsize=(8.27, 11.69))
            y = top if fig is not None else 0.95
            text = "\n".join(textwrap.wrap(f"{report.mri.index_line()} {report.mri.share_line()}", 105))
            page.text(0.06, y, "MRI", va="top", fontsize=11, fontweight="bold")
            page.text(0.06, y - 0.025, text, va="top", fontsize=8.5)
            height = 0.92 * 8.27 / 11.69 * mri.get_figheight() / mri.get_figwidth()  # the figure's own aspect
            _paste(page, mri, [0.04, max(0.02, y - 0.06 - height), 0.92, height])
            pdf.savefig(page)
            plt.close(page)
            fig = None
        if fig is not None:
            pdf.savefig(fig)
            plt.close(fig)
        for name in ("profile", "curves"):
            if name in figures:
                pdf.savefig(figures[name])
                plt.close(figures[name])
    return buf.getvalue()


def _paste(page, figure, rect: list[float]) -> None:
    """Draw ``figure`` as an image into ``rect`` (figure fractions) of ``page``, then close it."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=200)
    plt.close(figure)
    buf.seek(0)
    ax = page.add_axes(rect)
    ax.imshow(plt.imread(buf))
    ax.axis("off")


def write_pdf(report: SubjectReport, path: str | Path) -> Path:
    data = to_pdf_bytes(report)
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


COHORT_PDF_PAGES = 3
STRONGEST = 15


def _strongest_rows(report: CohortReport) -> list[list[str]]:
    top = report.per_idp.reindex(report.per_idp.cohen_d.abs().sort_values(ascending=False).index).head(STRONGEST)
    return [[r.idp, f"{r.cohen_d:+.2f} ({r.d_lo:+.2f}, {r.d_hi:+.2f})", f"{r.auc:.2f} ({r.auc_lo:.2f}, {r.auc_hi:.2f})",
             f"{100 * r.extreme_patients:.0f}%", f"{100 * r.extreme_controls:.0f}%"] for r in top.itertuples()]


COHORT_HEADER = ["IDP", "Cohen's d of z (95% CI)", "AUC (95% CI)", "patients |z|>1.96", "controls |z|>1.96"]


def render_cohort(report: CohortReport) -> tuple[str, bytes]:
    """The cohort report as (self-contained HTML, PDF bytes of :data:`COHORT_PDF_PAGES` pages)."""
    esc = html.escape
    figures = [cohort_effects_figure(report.per_idp), multivariate_by_group_figure(report.per_subject)]
    pngs = [_png(fig, close=False) for fig in figures]
    header = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in report.header.items())
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in _strongest_rows(report))
    multi = report.multivariate.round(3).to_html(index=False, border=0)
    subjects = report.per_subject.head(20).round(2).to_html(index=False, border=0)
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Cohort deviation report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto;color:#222}}
table{{border-collapse:collapse;font-size:0.9em}}td,th{{border:1px solid #ccc;padding:0.2em 0.5em;text-align:left}}
.disclaimer{{background:#fff3cd;padding:0.5em;border:1px solid #e0c36a}}img{{max-width:100%}}</style></head><body>
<h1>Cohort deviation report</h1><p class="disclaimer">{esc(report.disclaimer)}</p><table>{header}</table>
<h2>IDPs separating patients from controls (strongest {STRONGEST})</h2>
<table><tr>{''.join(f'<th>{esc(h)}</th>' for h in COHORT_HEADER)}</tr>{rows}</table>
<h2>Multivariate deviation by group</h2>{multi}
<img alt="multivariate deviation by group" src="data:image/png;base64,{pngs[1]}">
<h2>Subjects with the most extreme IDPs</h2>{subjects}
<h2>Effect sizes of every IDP</h2><img alt="effect sizes" src="data:image/png;base64,{pngs[0]}">
<p><small>Cohen's d with pooled SD and its normal-approximation CI; AUC of z (Mann-Whitney; below 0.5 when patients
are lower) with the Hanley-McNeil CI. Made by normcore on this machine.</small></p></body></html>
"""
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": "Cohort deviation report", "Creator": "normcore"}) as pdf:
        fig = plt.figure(figsize=(8.27, 11.69))
        fig.text(0.06, 0.99, report.disclaimer, va="top", fontsize=7, color="#8a6d00", wrap=True)
        fig.text(0.06, 0.95, "\n".join(["Cohort deviation report", ""] + [f"{k}: {v}" for k, v in
                                                                        report.header.items()]),
                 va="top", fontsize=8.5)
        ax = fig.add_axes([0.04, 0.08, 0.92, 0.7])
        ax.axis("off")
        ax.set_title(f"IDPs separating patients from controls (strongest {STRONGEST})", fontsize=10, loc="left")
        table = ax.table(cellText=_strongest_rows(report), colLabels=COHORT_HEADER, loc="upper left", cellLoc="left",
                         colWidths=[0.34, 0.2, 0.18, 0.14, 0.14])
        table.auto_set_font_size(False)
        table.set_fontsize(6.5)
        pdf.savefig(fig)
        plt.close(fig)
        for fig in (figures[1], figures[0]):
            pdf.savefig(fig)
            plt.close(fig)
    return text, buf.getvalue()
