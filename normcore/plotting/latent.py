"""Plotly figure builders of the diffusion autoencoder's results (no Streamlit): the whole-brain deviation profile,
where a scan sits among healthy scans, its brain-age gap among healthy people's, counterfactual slices and the
counterfactual volumes against healthy people.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from normcore.imaging.slices import axis_index, slice_of
from normcore.plotting.imaging import GRAY, _image_axes, _image_trace, slice_title

SEX_COLOURS = {"F": "rgb(200,80,120)", "M": "rgb(60,120,200)"}
SUBJECT_COLOUR = "rgb(230,120,0)"


def latent_profile_figure(per_dimension_z: list[float], labels: list[str] | None = None,
                          title: str = "Semantic latent: deviation per dimension") -> go.Figure:
    """Bars of the per-dimension z of a scan's semantic vector, with the +-2 band of healthy people."""
    z = np.asarray(per_dimension_z, float)
    labels = labels or [str(i + 1) for i in range(z.size)]
    colours = ["rgb(200,40,40)" if abs(v) > 2 else "rgb(120,120,120)" for v in z]
    fig = go.Figure(go.Bar(x=labels, y=z, marker_color=colours, name="z",
                           hovertemplate="dimension %{x}: z = %{y:.2f}<extra></extra>"))
    for level in (-2, 2):
        fig.add_hline(y=level, line=dict(dash="dot", color="rgb(150,150,150)"))
    fig.update_layout(title=title, xaxis_title="semantic dimension", yaxis_title="z against healthy (same age, sex)",
                      template="plotly_white", height=320, margin=dict(l=10, r=10, t=50, b=10), showlegend=False)
    return fig


def latent_position_figure(position: dict, title: str = "Where the scan sits among healthy scans") -> go.Figure:
    """Healthy training scans on the first principal axis of the semantic latent against age (by sex), the healthy
    trend for the scan's sex, the age- and sex-matched group of the cosine score, and the scan.

    ``position`` is :meth:`NormativeDiffusionAutoencoder.healthy_position`'s dict.
    """
    fig = go.Figure()
    ages, coords, sexes = (np.asarray(position[k]) for k in ("healthy_age", "healthy_coord", "healthy_sex"))
    for sex, colour in SEX_COLOURS.items():
        keep = sexes == sex
        fig.add_trace(go.Scatter(x=ages[keep], y=coords[keep], mode="markers", name=f"healthy {sex}",
                                 marker=dict(color=colour, size=6, opacity=0.45)))
    matched = np.asarray(position["matched"], int)
    fig.add_trace(go.Scatter(x=ages[matched], y=coords[matched], mode="markers", name="matched healthy (cosine)",
                             marker=dict(color="rgba(0,0,0,0)", size=10, line=dict(color="black", width=1.2))))
    fig.add_trace(go.Scatter(x=position["trend_age"], y=position["trend_coord"], mode="lines", name="healthy trend",
                             line=dict(color="black", dash="dash")))
    fig.add_trace(go.Scatter(x=[position["age"]], y=[position["coord"]], mode="markers", name="this scan",
                             marker=dict(color=SUBJECT_COLOUR, size=15, symbol="star", line=dict(color="black",
                                                                                                 width=1))))
    fig.update_layout(title=title, xaxis_title="age (years)", yaxis_title="semantic latent, first principal axis",
                      template="plotly_white", height=360, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def brain_age_figure(reference_ages: np.ndarray, reference_gaps: np.ndarray, age: float, gap: float,
                     title: str = "Brain-age gap among healthy scans") -> go.Figure:
    """The cross-fitted healthy reference's brain-age gaps (age-bias corrected) against age, their 5th-95th
    centile band, and the scan's gap as a star (above the band: looks older than 95% of healthy people)."""
    ages, gaps = np.asarray(reference_ages, float), np.asarray(reference_gaps, float)
    lo, hi = np.percentile(gaps, [5, 95])
    span = [float(min(ages.min(), age)), float(max(ages.max(), age))]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=span + span[::-1], y=[hi, hi, lo, lo], fill="toself", mode="none",
                             fillcolor="rgba(120,120,120,0.15)", name="healthy 5th-95th centile",
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=ages, y=gaps, mode="markers", name=f"healthy (n = {ages.size})",
                             marker=dict(color="rgb(120,120,120)", size=6, opacity=0.6),
                             hovertemplate="age %{x:.0f}: gap %{y:+.1f} y<extra></extra>"))
    fig.add_hline(y=0, line=dict(dash="dot", color="black"))
    fig.add_trace(go.Scatter(x=[age], y=[gap], mode="markers", name="this scan",
                             marker=dict(color=SUBJECT_COLOUR, size=15, symbol="star", line=dict(color="black",
                                                                                                 width=1)),
                             hovertemplate="this scan: gap %{y:+.1f} y<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="age (years)", yaxis_title="brain age - age (years, bias corrected)",
                      template="plotly_white", height=360, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def counterfactual_figure(reconstruction: np.ndarray, counterfactual: np.ndarray, own_age: float, age: float,
                          axis: str | int, index: int, diff_max: float | None = None, brain: np.ndarray | None = None,
                          title: str | None = None) -> go.Figure:
    """The reconstruction at the scan's own age, the counterfactual at ``age`` and their difference (one slice).

    The difference (counterfactual minus reconstruction; outside ``brain`` left blank) uses a diverging scale
    symmetric about 0 over +-``diff_max`` (default: the largest absolute difference in the volume, so the scale
    stays put while browsing).
    """
    ax, n = axis_index(axis), np.asarray(reconstruction).shape[axis_index(axis)]
    diff = np.asarray(counterfactual, float) - np.asarray(reconstruction, float)
    if brain is not None:
        diff = np.where(np.asarray(brain, bool), diff, np.nan)
    top = float(np.nanmax(np.abs(diff))) if diff_max is None and np.isfinite(diff).any() else float(diff_max or 0)
    top = top if np.isfinite(top) and top > 0 else 1.0
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.02,
                        subplot_titles=(f"at {own_age:g} (own age, reconstructed)", f"at {age:g} (counterfactual)",
                                        "difference (counterfactual - own age)"))
    fig.add_trace(_image_trace(slice_of(reconstruction, ax, index), GRAY, 0.0, 1.0, "own age"), 1, 1)
    fig.add_trace(_image_trace(slice_of(counterfactual, ax, index), GRAY, 0.0, 1.0, f"age {age:g}"), 1, 2)
    fig.add_trace(_image_trace(slice_of(diff, ax, index), "RdBu_r", -top, top, "difference", showscale=True,
                               colorbar=dict(title=dict(text="difference"), thickness=12, len=0.8)), 1, 3)
    _image_axes(fig, 3)
    fig.update_layout(title=title or slice_title(ax, index, n), template="plotly_white", height=380,
                      margin=dict(l=10, r=10, t=80, b=10), plot_bgcolor="black")
    fig.update_annotations(yshift=10)
    return fig


def counterfactual_volumes_figure(healthy: pd.DataFrame, volumes: list[dict], sex: str,
                                  measure: str = "ventricle_ml") -> go.Figure:
    """A volume (``ventricle_ml`` or ``tissue_ml``) of the counterfactuals against age, over the healthy cohort's
    scans (the scan's sex highlighted) and their linear trend."""
    label = {"ventricle_ml": "lateral-ventricle CSF (ml)", "tissue_ml": "brain tissue (ml)"}[measure]
    fig = go.Figure()
    code = 1.0 if str(sex).upper().startswith("M") else 0.0
    for same, opacity, name in ((False, 0.2, "healthy, other sex"), (True, 0.5, f"healthy {sex}")):
        keep = (healthy["sex"] == code) == same
        fig.add_trace(go.Scatter(x=healthy.loc[keep, "age"], y=healthy.loc[keep, measure], mode="markers", name=name,
                                 marker=dict(color=SEX_COLOURS.get(sex if same else ("F" if code else "M")),
                                             size=6, opacity=opacity)))
    mine = healthy[healthy["sex"] == code]
    if len(mine) >= 3:
        slope, icpt = np.polyfit(mine["age"], mine[measure], 1)
        xs = np.array([mine["age"].min(), mine["age"].max()])
        fig.add_trace(go.Scatter(x=xs, y=icpt + slope * xs, mode="lines", name=f"healthy {sex} trend",
                                 line=dict(color="black", dash="dash")))
    frame = pd.DataFrame(volumes).sort_values("age")
    fig.add_trace(go.Scatter(x=frame["age"], y=frame[measure], mode="lines+markers", name="this brain at other ages",
                             line=dict(color=SUBJECT_COLOUR, width=3), marker=dict(size=8)))
    own = frame[frame["kind"] == "reconstruction"]
    fig.add_trace(go.Scatter(x=own["age"], y=own[measure], mode="markers", name="own age",
                             marker=dict(color=SUBJECT_COLOUR, size=15, symbol="star", line=dict(color="black",
                                                                                                 width=1))))
    fig.update_layout(title=f"{label[0].upper() + label[1:]} at other ages",
                      xaxis_title="age (years)", yaxis_title=label, template="plotly_white", height=360,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig
