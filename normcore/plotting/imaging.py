"""Plotly figure builders for the imaging pages (no Streamlit): slices, restoration triptych, z-map overlay.

Volumes are on the model grid in MNI space with RAS voxel axes: axis 0 = x (left -> right), axis 1 = y
(posterior -> anterior), axis 2 = z (inferior -> superior). Slices are returned in image order (row 0 at the
top) in the neurological convention (the subject's left on the left of the image): axial slices show x across
and y up (anterior at the top), coronal slices x across and z up, sagittal slices y across (anterior on the
right) and z up (superior at the top).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from normcore.imaging.anomaly import TOPS
from normcore.imaging.native_view import Z_DISPLAY_MAX, NativeView
from normcore.imaging.slices import axis_index, axis_name, slice_of

GRAY = [[0.0, "rgb(0,0,0)"], [1.0, "rgb(255,255,255)"]]
RED_YELLOW = [[0.0, "rgb(200,0,0)"], [0.5, "rgb(255,110,0)"], [1.0, "rgb(255,255,0)"]]
LESION_COLOUR = "rgb(0,200,255)"


def best_slice(anomaly: np.ndarray, brain: np.ndarray | None, axis: str | int) -> int:
    """The slice along ``axis`` holding the largest anomaly value inside the brain (middle slice if none)."""
    ax = axis_index(axis)
    values = np.asarray(anomaly, float)
    inside = np.isfinite(values) if brain is None else np.asarray(brain, bool) & np.isfinite(values)
    if not inside.any():
        return values.shape[ax] // 2
    masked = np.where(inside, values, -np.inf)
    others = tuple(i for i in range(3) if i != ax)
    return int(np.argmax(masked.max(axis=others)))


def most_abnormal_slice(zmap: np.ndarray, brain: np.ndarray | None, axis: str | int, threshold: float = 3.0) -> int:
    """The slice with the largest total z above ``threshold`` inside the brain: where a cluster of abnormal
    voxels is, not a single extreme voxel; falls back to :func:`best_slice` when nothing exceeds it.

    Only slices holding at least a quarter of the largest slice's brain area are candidates: the brain's
    edge slices (a few voxels of cortex, where registration and masking errors give large z) would
    otherwise open a view on an edge slice."""
    ax = axis_index(axis)
    other = tuple(i for i in range(3) if i != ax)
    z = np.nan_to_num(np.asarray(zmap, float), nan=0.0)
    if brain is not None:
        inside = np.asarray(brain, bool)
        z = np.where(inside, z, 0.0)
        area = inside.sum(axis=other)
        candidate = area >= 0.25 * area.max() if area.any() else np.ones(z.shape[ax], bool)
    else:
        candidate = np.ones(z.shape[ax], bool)
    excess = np.where(candidate, np.clip(z - threshold, 0.0, None).sum(axis=other), 0.0)
    if not excess.any():
        return best_slice(zmap, brain, axis)
    return int(np.argmax(excess))


def _image_trace(plane: np.ndarray, colorscale, zmin: float, zmax: float, name: str, showscale: bool = False,
                 colorbar: dict | None = None, opacity: float = 1.0) -> go.Heatmap:
    return go.Heatmap(z=np.asarray(plane, np.float32), colorscale=colorscale, zmin=zmin, zmax=zmax, name=name,
                      showscale=showscale, colorbar=colorbar, opacity=opacity,
                      hovertemplate=f"{name}: %{{z:.3f}}<br>column %{{x}}, row %{{y}}<extra></extra>")


def _image_axes(fig: go.Figure, n: int) -> None:
    """Equal aspect, image order (row 0 at the top), no axes."""
    for k in range(1, n + 1):
        suffix = "" if k == 1 else str(k)
        fig.update_layout({f"xaxis{suffix}": dict(visible=False, constrain="domain"),
                           f"yaxis{suffix}": dict(visible=False, autorange="reversed", scaleanchor=f"x{suffix}",
                                                  scaleratio=1, constrain="domain")})


def slice_title(axis: str | int, index: int, n: int) -> str:
    return f"{axis_name(axis)} slice {int(index)} of {n - 1}"


def triptych_figure(volume: np.ndarray, restoration: np.ndarray, anomaly: np.ndarray, axis: str | int, index: int,
                    title: str | None = None, anomaly_max: float | None = None) -> go.Figure:
    """Original, pseudo-healthy restoration and anomaly map of one slice side by side (3 heatmaps).

    Images use a fixed grayscale over [0, 1]; the anomaly map a hot colour scale over [0, ``anomaly_max``]
    (default: the volume's maximum, so the scale stays put while browsing slices).
    """
    ax, n = axis_index(axis), np.asarray(volume).shape[axis_index(axis)]
    top = float(np.nanmax(anomaly)) if anomaly_max is None else float(anomaly_max)
    top = top if np.isfinite(top) and top > 0 else 1.0
    fig = make_subplots(rows=1, cols=3, subplot_titles=("original", "pseudo-healthy restoration", "anomaly map"),
                        horizontal_spacing=0.02)
    fig.add_trace(_image_trace(slice_of(volume, ax, index), GRAY, 0.0, 1.0, "original"), 1, 1)
    fig.add_trace(_image_trace(slice_of(restoration, ax, index), GRAY, 0.0, 1.0, "restoration"), 1, 2)
    fig.add_trace(_image_trace(slice_of(anomaly, ax, index), "Hot", 0.0, top, "anomaly", showscale=True,
                               colorbar=dict(title=dict(text="anomaly"), thickness=12, len=0.8)), 1, 3)
    _image_axes(fig, 3)
    fig.update_layout(title=title or slice_title(ax, index, n), template="plotly_white", height=380,
                      margin=dict(l=10, r=10, t=80, b=10), plot_bgcolor="black")
    fig.update_annotations(yshift=10)  # the panel titles sit above the images, not on them
    return fig


def overlay_figure(volume: np.ndarray, zmap: np.ndarray, axis: str | int, index: int, threshold: float = 3.0,
                   opacity: float = 0.6, lesion: np.ndarray | None = None, title: str | None = None) -> go.Figure:
    """The original in grayscale with the z-map above ``threshold`` in red to yellow (values below are NaN), the
    colour scale clipped at ``Z_DISPLAY_MAX`` (larger z in the top colour).

    ``lesion`` (a bool volume, e.g. the known lesion of a demo scan) is outlined as a contour.
    """
    ax, n = axis_index(axis), np.asarray(volume).shape[axis_index(axis)]
    z = np.asarray(slice_of(zmap, ax, index), np.float32)
    shown = np.where(np.isfinite(z) & (z >= threshold), z, np.nan).astype(np.float32)
    finite = np.asarray(zmap, float)[np.isfinite(zmap)]
    top = max(min(float(finite.max()) if finite.size else threshold, Z_DISPLAY_MAX), threshold + 1.0)
    fig = go.Figure()
    fig.add_trace(_image_trace(slice_of(volume, ax, index), GRAY, 0.0, 1.0, "original"))
    fig.add_trace(_image_trace(shown, RED_YELLOW, float(threshold), top, "z", showscale=True, opacity=float(opacity),
                               colorbar=dict(title=dict(text="z"), thickness=12, len=0.8)))
    if lesion is not None:
        outline = slice_of(np.asarray(lesion, bool), ax, index).astype(np.float32)
        if outline.any():
            fig.add_trace(go.Contour(z=outline, contours=dict(start=0.5, end=0.5, coloring="none"), showscale=False,
                                     line=dict(color=LESION_COLOUR, width=2), name="known lesion", hoverinfo="skip",
                                     showlegend=True))
    _image_axes(fig, 1)
    fig.update_layout(title=title or f"z > {threshold:g} over the original · {slice_title(ax, index, n)}",
                      template="plotly_white", height=420, margin=dict(l=10, r=10, t=60, b=10),
                      plot_bgcolor="black", legend=dict(orientation="h", y=-0.02))
    return fig


VIEW_PLANES = ("axial", "coronal", "sagittal")


def crosshair(view_shape: tuple[int, int, int], axis: str, voxel) -> tuple[int, int]:
    """(column, row) of ``voxel`` in the plane along ``axis`` through it (:func:`slice_of`'s orientation)."""
    i, j, k = (int(v) for v in voxel)
    nx, ny, nz = view_shape
    return {"axial": (i, ny - 1 - j), "coronal": (i, nz - 1 - k), "sagittal": (j, nz - 1 - k)}[axis]


def native_planes_figure(view: NativeView, voxel, threshold: float = 3.0, opacity: float = 0.6,
                         z_max: float = Z_DISPLAY_MAX, title: str | None = None) -> go.Figure:
    """Axial, coronal and sagittal planes of the scan at its own resolution through ``voxel`` (RAS indices of
    ``view``), the z-map above ``threshold`` over them in red to yellow (colour clipped at ``z_max``), each plane
    at its true voxel aspect, smoothed for display, with a crosshair at ``voxel``."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=VIEW_PLANES, horizontal_spacing=0.03)
    top = max(float(z_max), threshold + 1.0)
    for c, axis in enumerate(VIEW_PLANES, start=1):
        grey, z = view.plane(axis, int(voxel[axis_index(axis)]))
        shown = np.where(np.isfinite(z) & (z >= threshold), z, np.nan).astype(np.float32)
        g = _image_trace(grey, GRAY, 0.0, 1.0, "scan")
        g.update(zsmooth="best")
        fig.add_trace(g, 1, c)
        fig.add_trace(_image_trace(shown, RED_YELLOW, float(threshold), top, "z", showscale=c == 3,
                                   opacity=float(opacity),
                                   colorbar=dict(title=dict(text="z"), thickness=12, len=0.8)), 1, c)
        col, row = crosshair(view.shape, axis, voxel)
        suffix = "" if c == 1 else str(c)
        for x0, x1, y0, y1 in ((col, col, -0.5, grey.shape[0] - 0.5), (-0.5, grey.shape[1] - 0.5, row, row)):
            fig.add_shape(type="line", x0=x0, x1=x1, y0=y0, y1=y1, xref=f"x{suffix}", yref=f"y{suffix}",
                          line=dict(color="rgba(0,200,255,0.6)", width=1))
    _image_axes(fig, 3)
    for c, axis in enumerate(VIEW_PLANES, start=1):
        suffix = "" if c == 1 else str(c)
        fig.update_layout({f"yaxis{suffix}": dict(scaleratio=view.aspect(axis))})
    x, y, zc = view.mm(voxel)
    voxels = " x ".join(f"{v:.2g}" for v in view.zooms)
    fig.update_layout(title=title or f"at ({x:.0f}, {y:.0f}, {zc:.0f}) mm · voxels {voxels} mm · z > {threshold:g} "
                      f"(colour clipped at {top:g})", template="plotly_white", height=420,
                      margin=dict(l=10, r=10, t=80, b=10), plot_bgcolor="black")
    fig.update_annotations(yshift=10)
    return fig


def quality_table(gates: list[dict]) -> pd.DataFrame:
    """The quality gates of a scan (:func:`normcore.imaging.acquisition.gates`) as a table to show beside its
    index: gate, the scan's value, what the model's training scans require, passed."""
    return pd.DataFrame([{"quality gate": g["gate"], "this scan": str(g["value"]), "required": g["limit"],
                          "passed": "yes" if g["passed"] else "NO"} for g in gates],
                        columns=["quality gate", "this scan", "required", "passed"])


def cohort_table(summaries: list[dict]) -> pd.DataFrame:
    """One row per scored scan from :meth:`ScanResult.summary` dicts: every index of
    :data:`~normcore.imaging.anomaly.TOPS` and its centile (empty where a summary lacks it; the first summary's
    headline index first), the latent mask share, whether the index is reliable, the brain-age gap (years) and its
    centile (0-100; empty for a model without the read-out), warnings."""
    lead = (summaries[0].get("headline_index") or "top1") if summaries else "top1"
    order = [lead, *(k for k in TOPS if k != lead)] if lead in TOPS else list(TOPS)
    indices = [c for k in order for c in (f"index {k}", f"centile {k}")]
    rows = []
    for s in summaries:
        index, centile = s.get("abnormality_index") or {}, s.get("healthy_centile") or {}
        row = {"scan": s.get("scan"), "age": s.get("age"), "sex": s.get("sex"), "method": s.get("method")}
        for k in TOPS:
            row[f"index {k}"], row[f"centile {k}"] = index.get(k), centile.get(k)
        brain_age = s.get("brain_age") or {}
        rows.append(row | {"latent mask share": s.get("latent_mask_share"), "index reliable": s.get("index_reliable"),
                           "brain-age gap": brain_age.get("gap_years"),
                           "brain-age gap centile": 100 * brain_age["centile"] if brain_age else None,
                           "warnings": "; ".join(s.get("warnings") or [])})
    return pd.DataFrame(rows, columns=["scan", "age", "sex", "method", *indices, "latent mask share", "index reliable",
                                       "brain-age gap", "brain-age gap centile", "warnings"])
