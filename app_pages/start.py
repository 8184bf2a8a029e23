"""Start: the demo model's centile curves, and what the dashboard shows."""

import streamlit as st

from dashboard.state import active_model, age_grid_for, model_key, require_model
from normcore.plotting.tabular import centile_fan

st.title("NormDiff: normative modelling with diffusion models")
st.markdown(
    "**What am I looking at?** A normative model describes how a brain measure (an IDP) is distributed "
    "in healthy people of a given age and sex. The shaded bands are centiles: half of healthy people lie "
    "in the darkest band (25th–75th), 90% between the 5th and 95th. Each dot is a subject; one far "
    "outside the bands deviates from the norm. The demo uses a synthetic cohort with a known truth and a "
    "diffusion model fitted to it. Upload your own table on **Data**, fit on **Fit**.")

if require_model():
    model = active_model()
    df = st.session_state.data
    idp = model.idps[0]
    fixed = {c: levels[0] for c, levels in model.levels_.items()}

    @st.cache_data(max_entries=8, show_spinner="Drawing centile curves…")
    def start_curves(_model, key: str, idp: str, fixed_items: tuple):
        return _model.centiles(age_grid_for(_model, 2.0), fixed=dict(fixed_items), n_samples=1000, idps=[idp])

    curves = start_curves(model, model_key(), idp, tuple(fixed.items()))
    points = df
    for c, v in fixed.items():
        if c in points:
            points = points[points[c].astype(str) == str(v)]
    label = ", ".join(f"{k} = {v}" for k, v in fixed.items())
    st.plotly_chart(centile_fan(curves, idp, points if idp in points else None,
                                title=f"{idp}: centiles of {st.session_state.model_name} ({label})"),
                    width="stretch", key="start_fan")
