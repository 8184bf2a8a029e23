"""Plotly figure builders (no Streamlit): pages only place these figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

FAN_COLOURS = "rgba(31, 119, 180, {a})"


def centile_fan(curves: pd.DataFrame, idp: str, subjects: pd.DataFrame | None = None, age: str = "age",
                title: str | None = None, compare: pd.DataFrame | None = None, compare_name: str = "comparison",
                group_col: str | None = None, hover_col: str | None = None, z_col: str | None = None) -> go.Figure:
    """Fan chart of centile curves (long format: age, idp, quantile, value).

    ``subjects`` are drawn as points, one trace per value of ``group_col`` (e.g. controls vs patients),
    with ``hover_col`` (subject ID) and ``z_col`` in the hover text. ``compare`` overlays a second
    model's curves as dashed lines.
    """
    cur = curves[curves["idp"] == idp]
    wide = cur.pivot_table(index="age", columns="quantile", values="value").sort_index()
    qs = list(wide.columns)
    fig = go.Figure()
    for lo, hi in zip(qs[: len(qs) // 2], qs[::-1][: len(qs) // 2], strict=True):
        alpha = 0.12 + 0.5 * (lo / 0.5) * 0.3
        fig.add_trace(go.Scatter(x=wide.index, y=wide[hi], mode="lines", line=dict(width=0), showlegend=False,
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=wide.index, y=wide[lo], mode="lines", line=dict(width=0), fill="tonexty",
                                 fillcolor=FAN_COLOURS.format(a=round(alpha, 2)), name=f"{lo:g}–{hi:g}"))
    if 0.5 in wide.columns:
        fig.add_trace(go.Scatter(x=wide.index, y=wide[0.5], mode="lines", name="median",
                                 line=dict(color="rgb(31, 119, 180)", width=2)))
    if compare is not None:
        other = compare[compare["idp"] == idp].pivot_table(index="age", columns="quantile", values="value")
        for q in other.columns:
            fig.add_trace(go.Scatter(x=other.index, y=other[q], mode="lines", name=f"{compare_name} {q:g}",
                                     line=dict(color="rgb(214, 39, 40)", width=1.5, dash="dash")))
    if subjects is not None and len(subjects):
        groups = subjects.groupby(group_col, sort=True) if group_col else [("subjects", subjects)]
        palette = ["rgba(60,60,60,0.55)", "rgba(214,39,40,0.85)", "rgba(44,160,44,0.8)", "rgba(148,103,189,0.8)"]
        for k, (name, grp) in enumerate(groups):
            text = grp[hover_col].astype(str) if hover_col else None
            custom = grp[z_col].to_numpy() if z_col and z_col in grp else None
            hover = ("%{text}<br>" if hover_col else "") + "age %{x:.1f}<br>value %{y:.3g}"
            hover += "<br>z = %{customdata:.2f}" if custom is not None else ""
            fig.add_trace(go.Scatter(x=grp[age], y=grp[idp], mode="markers", name=str(name), text=text,
                                     customdata=custom, hovertemplate=hover + "<extra></extra>",
                                     marker=dict(size=5, color=palette[k % len(palette)])))
    fig.update_layout(title=title or idp, xaxis_title="age (years)", yaxis_title=idp, template="plotly_white",
                      margin=dict(l=40, r=20, t=50, b=40), legend_title_text="centiles")
    return fig


SHARED_COLOUR = "#d9d9d9"  # a value most of the reference shares: no deviation to colour
SHARED_HOVER = "at a value most of the reference shares (its z is drawn at random within that share)"


def z_heatmap(scores: pd.DataFrame, idps: list[str], id_col: str | None = None, sort_by: str | None = None,
              max_subjects: int = 300, shared: np.ndarray | None = None) -> go.Figure:
    """Subject x IDP heatmap of deviation z-scores, diverging colours centred at 0 (|z| capped at 4).

    ``shared`` (rows of ``scores`` x ``idps``, e.g. :func:`normcore.tabular.point_masses.at_shared_masses`): cells
    whose value sits at a point mass most of the reference shares are grey, not coloured by their random z."""
    frame = scores.assign(_row=np.arange(len(scores)))
    if sort_by:
        frame = frame.sort_values(sort_by, ascending=False, key=lambda s: s.abs() if sort_by.startswith("z:") else s)
    frame = frame.head(max_subjects)
    labels = frame[id_col].astype(str).tolist() if id_col else [str(i) for i in frame.index]
    z = frame[[f"z:{i}" for i in idps]].to_numpy(float)
    grey = np.zeros(z.shape, bool) if shared is None else np.asarray(shared, bool)[frame["_row"].to_numpy()]
    fig = go.Figure(go.Heatmap(z=np.where(grey, np.nan, z), x=idps, y=labels, zmid=0, zmin=-4, zmax=4,
                               colorscale="RdBu_r", colorbar=dict(title="z"),
                               hovertemplate="%{y}<br>%{x}<br>z = %{z:.2f}<extra></extra>"))
    if grey.any():
        fig.add_trace(go.Heatmap(z=np.where(grey, 1.0, np.nan), x=idps, y=labels, showscale=False,
                                 colorscale=[[0, SHARED_COLOUR], [1, SHARED_COLOUR]],
                                 hovertemplate=f"%{{y}}<br>%{{x}}<br>{SHARED_HOVER}<extra></extra>"))
    fig.update_layout(template="plotly_white", xaxis_title="IDP", yaxis_title="subject",
                      yaxis=dict(autorange="reversed"), margin=dict(l=60, r=20, t=30, b=80))
    return fig


def deviation_profile(scores: pd.DataFrame, row: int, idps: list[str], threshold: float = 1.96,
                      shared: np.ndarray | None = None) -> go.Figure:
    """One subject's z across IDPs, bars coloured by direction, with the ±threshold band marked; a value at a point
    mass most of the reference shares (``shared``, as :func:`z_heatmap`'s) is a pale bar, whatever its z."""
    z = scores.iloc[row][[f"z:{i}" for i in idps]].to_numpy(float)
    grey = np.zeros(len(idps), bool) if shared is None else np.asarray(shared, bool)[row]
    colours = [SHARED_COLOUR if at else "#b2182b" if v > threshold else "#2166ac" if v < -threshold else "#999999"
               for v, at in zip(z, grey, strict=True)]
    fig = go.Figure(go.Bar(x=idps, y=z, marker_color=colours, customdata=[SHARED_HOVER if at else "" for at in grey],
                           hovertemplate="%{x}<br>z = %{y:.2f}<br>%{customdata}<extra></extra>"))
    for y in (-threshold, threshold):
        fig.add_hline(y=y, line_dash="dot", line_color="grey")
    fig.update_layout(template="plotly_white", yaxis_title="deviation z", xaxis_title="IDP",
                      margin=dict(l=40, r=20, t=30, b=80))
    return fig


def visit_trajectory(curves: pd.DataFrame, idp: str, visits: pd.DataFrame, age: str = "age",
                     visit_col: str = "visit", z_col: str | None = None, title: str | None = None) -> go.Figure:
    """Centile curves of ``idp`` with one subject's visits (rows of ``visits``) as points joined in visit order,
    each labelled with its visit and, with ``z_col``, its z."""
    fig = centile_fan(curves, idp, title=title or f"{idp}: visits on the centile curves")
    ordered = visits.sort_values(visit_col, kind="stable")
    custom = ordered[z_col].to_numpy() if z_col and z_col in ordered else None
    hover = "visit %{text}<br>age %{x:.1f}<br>value %{y:.3g}" + ("<br>z = %{customdata:.2f}" if custom is not None
                                                                    else "")
    fig.add_trace(go.Scatter(x=ordered[age], y=ordered[idp], mode="lines+markers+text", name="visits",
                             text=ordered[visit_col].astype(str), textposition="top center", customdata=custom,
                             hovertemplate=hover + "<extra></extra>",
                             line=dict(color="rgb(214, 39, 40)", width=2), marker=dict(size=9)))
    return fig


def correlation_heatmaps(real: pd.DataFrame, generated: pd.DataFrame, idps: list[str]) -> go.Figure:
    """Three panels: Spearman correlation of real data, of model samples, and their difference."""
    from plotly.subplots import make_subplots

    from normcore.metrics.dependence import spearman_matrix

    a, b = spearman_matrix(real[idps].to_numpy()), spearman_matrix(generated[idps].to_numpy())
    fig = make_subplots(rows=1, cols=3, subplot_titles=("real", "model samples", "model − real"),
                        shared_yaxes=True, horizontal_spacing=0.03)
    for col, mat in enumerate((a, b, b - a), start=1):
        fig.add_trace(go.Heatmap(z=mat, x=idps, y=idps, zmin=-1, zmax=1, zmid=0, colorscale="RdBu_r",
                                 showscale=col == 3), row=1, col=col)
    fig.update_layout(template="plotly_white", margin=dict(l=40, r=20, t=40, b=40))
    # IDP names label the rows once (left panel only): repeated per panel they ran into the previous panel
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(showticklabels=False, row=1, col=2)
    fig.update_yaxes(showticklabels=False, row=1, col=3)
    return fig


def pit_histogram(centiles, bins: int = 20, title: str = "PIT of held-out controls") -> go.Figure:
    """Histogram of centiles (PIT values) with the uniform reference density."""
    import numpy as np

    u = np.asarray(centiles, float)
    u = u[~np.isnan(u)]
    fig = go.Figure(go.Histogram(x=u, xbins=dict(start=0, end=1, size=1 / bins), histnorm="probability density",
                                 name="PIT"))
    fig.add_hline(y=1.0, line_dash="dash", line_color="black", annotation_text="uniform")
    fig.update_layout(template="plotly_white", title=title, xaxis_title="centile", yaxis_title="density",
                      margin=dict(l=40, r=20, t=50, b=40))
    return fig


def loss_curve(history: dict) -> go.Figure:
    """Training and validation loss against optimiser steps. A fit's history (``initial_val_loss``: step 0's
    validation loss, before training; ``kept_step``: the evaluation whose weights were kept, marked;
    ``step0_denoiser``: what step 0 was; ``loss_kept_step``: the loss's own choice, when the CRPS overruled it) shows
    what early stopping chose; a history of progress events has none."""
    fig = go.Figure()
    steps, val = list(history.get("step", [])), list(history.get("val_loss", []))
    if history.get("initial_val_loss") is not None:
        steps, val = [0, *steps], [history["initial_val_loss"], *val]
    fig.add_trace(go.Scatter(x=history.get("step", []), y=history.get("train_loss", []), name="train", mode="lines"))
    fig.add_trace(go.Scatter(x=steps, y=val, name="validation (EMA)", mode="lines+markers"))
    if history.get("kept_step") is not None:
        kept = history["kept_step"]
        by_crps = " by the CRPS" if history.get("loss_kept_step", kept) != kept else ""
        fig.add_vline(x=kept, line_dash="dot", line_color="gray",
                      annotation_text=f"kept: step 0 ({history.get('step0_denoiser', 'before training')}){by_crps}"
                      if kept == 0 else f"kept: step {kept}{by_crps}")
        if by_crps:
            fig.add_vline(x=history["loss_kept_step"], line_dash="dash", line_color="lightgray",
                          annotation_text="lowest loss", annotation_position="bottom right")
    fig.update_layout(template="plotly_white", xaxis_title="step", yaxis_title="ε-prediction loss",
                      margin=dict(l=40, r=20, t=30, b=40))
    return fig
