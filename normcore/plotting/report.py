"""Static (matplotlib) figures of reports: the grouped deviation profile, centile-curve panels, MRI slices, and the
cohort figures.

Plain functions returning matplotlib figures (no Streamlit, no browser), used by both the HTML and the PDF
rendering of :mod:`normcore.reports`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to files or bytes only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from normcore.imaging.native_view import Z_DISPLAY_MAX, Z_THRESHOLD  # noqa: E402
from normcore.plotting.centile_bands import BAND_COLOURS, BANDS  # noqa: E402

if TYPE_CHECKING:  # the figures read a report's fields; importing normcore.reports here would run in a circle
    from normcore.reports.mri import MriFindings
    from normcore.reports.subject import SubjectReport

Z_COLOURS = "autumn"  # red (z at the threshold) to yellow (z at the display maximum and above)


def _grouped_bars(frame, value: str, colour, title: str, xlabel: str, width: float = 7.5,
                  whiskers: tuple[str, str] | None = None) -> tuple[Figure, plt.Axes]:
    """Horizontal bars of ``frame[value]`` per IDP in anatomical groups (bold group labels on the left), one
    colour per row from ``colour(row)``, optional CI whiskers from two columns."""
    groups = list(dict.fromkeys(frame.group))
    fig = plt.figure(figsize=(width, max(3.0, 0.13 * (len(frame) + len(groups)) + 1.2)))
    ax = fig.add_subplot(111)
    y, ticks, labels = 0, [], []
    for g in groups:
        ax.text(-0.02, y, g, transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=7,
                fontweight="bold")
        y += 1
        for r in frame[frame.group == g].itertuples():
            v = getattr(r, value)
            ax.barh(y, 0.0 if np.isnan(v) else v, color=colour(r), height=0.8, edgecolor="none")
            if whiskers:
                ax.plot([getattr(r, whiskers[0]), getattr(r, whiskers[1])], [y, y], color="black", lw=0.6)
            ticks.append(y)
            labels.append(r.idp)
            y += 1
    ax.set_yticks(ticks, labels, fontsize=4.5 if len(frame) > 60 else 7)
    ax.set_ylim(y, -1)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", pad=2)
    fig.subplots_adjust(left=0.42, right=0.84, top=1 - 0.5 / fig.get_figheight(), bottom=0.6 / fig.get_figheight())
    return fig, ax


def profile_figure(report: SubjectReport, width: float = 7.5) -> Figure:
    """Bars of z per IDP, grouped anatomically (group labels on the left), coloured by centile band."""
    fig, ax = _grouped_bars(report.profile, "z", lambda r: BAND_COLOURS[r.band],
                            f"Deviation profile of {report.subject}", "deviation z (dashed: 5th and 95th centile)",
                            width)
    for v in (-1.96, 1.96):
        ax.axvline(v, color="0.5", lw=0.5, ls="--")
    ax.legend(handles=[Patch(color=c, label=b) for b, c in BANDS], fontsize=6, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), title="centile", title_fontsize=6, frameon=False)  # beside, never on bars
    return fig


def curves_figure(report: SubjectReport, age_label: str = "age (years)") -> Figure:
    """Centile curves (5-95 and 25-75 bands, median) of the most deviant IDPs with the subject marked."""
    names = list(dict.fromkeys(report.curves.idp))
    cols = 2
    rows = max(1, int(np.ceil(len(names) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(7.5, 2.8 * rows), squeeze=False)
    values = report.profile.set_index("idp")
    for ax, name in zip(axes.flat, names, strict=False):
        c = report.curves[report.curves.idp == name].pivot_table(index="age", columns="quantile", values="value")
        ax.fill_between(c.index, c[0.05], c[0.95], color="#C6DBEF", label="5th-95th")
        ax.fill_between(c.index, c[0.25], c[0.75], color="#9ECAE1", label="25th-75th")
        ax.plot(c.index, c[0.5], color="#08519C", lw=1.2, label="median")
        r = values.loc[name]
        ax.plot([report.age], [r.value], "o", color=BAND_COLOURS[r.band], markeredgecolor="black", ms=7,
                label=f"{report.subject}: centile {100 * r.centile:.1f}")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(age_label, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5.5, loc="best")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def cohort_effects_figure(per_idp, width: float = 7.5) -> Figure:
    """Cohen's d of z per IDP (patients minus controls) with 95% CI, grouped anatomically."""
    def colour(r) -> str:  # blue / red when the CI excludes 0 (patients lower / higher), grey otherwise
        return "#2166AC" if r.d_hi < 0 else "#B2182B" if r.d_lo > 0 else "#BDBDBD"

    fig, _ = _grouped_bars(per_idp, "cohen_d", colour, "Which IDPs separate patients from controls",
                           "Cohen's d of z, patients minus controls (95% CI; coloured when the CI excludes 0)", width,
                           whiskers=("d_lo", "d_hi"))
    return fig


def multivariate_by_group_figure(per_subject) -> Figure:
    """Distribution of the multivariate deviation score (z scale) in each group."""
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    groups = list(dict.fromkeys(per_subject.group))
    data = [per_subject.multivariate_z[per_subject.group == g].dropna().to_numpy() for g in groups]
    ax.boxplot(data, orientation="horizontal", widths=0.6)
    ax.set_yticks(range(1, len(groups) + 1), [f"{g} (n={len(d)})" for g, d in zip(groups, data, strict=True)],
                  fontsize=8)
    ax.axvline(1.645, color="0.5", ls="--", lw=0.8)
    ax.set_xlabel("multivariate deviation (z scale; dashed: 95th centile of healthy people)")
    ax.set_title("Multivariate deviation by group", fontsize=10)
    fig.tight_layout()
    return fig


def mri_figure(findings: MriFindings, threshold: float | None = None, z_max: float | None = None) -> Figure:
    """Three orthogonal slices (axial, coronal, sagittal) through the most anomalous region: the scan in grey with
    voxel z above ``threshold`` in red to yellow, the colour scale clipped at ``z_max`` (defaults:
    :mod:`normcore.imaging.native_view`'s constants), each plane at its true voxel aspect."""
    threshold = Z_THRESHOLD if threshold is None else threshold
    z_max = Z_DISPLAY_MAX if z_max is None else z_max
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.0))
    image = None
    for ax, (axis, (grey, z, aspect)) in zip(axes, findings.planes.items(), strict=True):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="bilinear")
        shown = np.ma.masked_where(~(np.isfinite(z) & (z >= threshold)), z)
        image = ax.imshow(shown, cmap=Z_COLOURS, vmin=threshold, vmax=z_max, aspect=aspect, alpha=0.8,
                          interpolation="nearest")
        ax.set_title(axis, fontsize=8)
        ax.axis("off")
    x, y, zc = findings.centre_mm
    fig.suptitle(f"Most anomalous region at ({x:.0f}, {y:.0f}, {zc:.0f}) mm · z > {threshold:g} "
                 f"(colour clipped at {z_max:g})" + ("" if findings.background == "scan" else
                                                     " · grey: pseudo-healthy restoration"), fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.9, top=0.86, bottom=0.02, wspace=0.03)
    bar = fig.colorbar(image, cax=fig.add_axes([0.92, 0.15, 0.015, 0.6]))
    bar.set_label("voxel z", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return fig
