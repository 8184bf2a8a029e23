"""Plotly figure builders (no Streamlit): pages only place these figures."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

FAN_COLOURS = "rgba(31, 119, 180, {a})"


def centile_fan(curves: pd.DataFrame, idp: str, subjects: pd.DataFrame | None = None, age: str = "age",
                title: str | None = None) -> go.Figure:
    """Fan chart of centile curves (long format: age, idp, quantile, value) with optional subject points."""
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
    if subjects is not None and len(subjects):
        fig.add_trace(go.Scatter(x=subjects[age], y=subjects[idp], mode="markers", name="subjects",
                                 marker=dict(size=4, color="rgba(60,60,60,0.5)")))
    fig.update_layout(title=title or idp, xaxis_title="age (years)", yaxis_title=idp, template="plotly_white",
                      margin=dict(l=40, r=20, t=50, b=40), legend_title_text="centiles")
    return fig
