"""Centile curves: fan chart per IDP with the subjects, optionally against a second model."""

import streamlit as st

from dashboard.demo import available_demo_models
from dashboard.state import (
    active_model,
    age_grid_for,
    cached_model,
    categorical_choices,
    level_label,
    library,
    model_columns_present,
    model_key,
    require_model,
    score_job,
    show_error,
)
from normcore.plotting.tabular import centile_fan

st.title("Centile curves")
ss = st.session_state


@st.cache_data(max_entries=32, show_spinner="Drawing centile curves…")
def curves_for(_model, key, fixed_items, step, samples):
    """Curves of every IDP at once: the model samples all IDPs jointly, so one IDP costs the same as all,
    and switching IDP afterwards is a cache hit."""
    return _model.centiles(age_grid_for(_model, step), fixed=dict(fixed_items), n_samples=samples)


if require_model():
    model = active_model()
    df, m = ss.data, ss.mapping
    idp = st.selectbox("IDP (type to search)", model.idps)
    fixed = {}
    choices = categorical_choices(model)
    # an adapted model opens on the site it was adapted to: the curves the user's subjects belong to
    adapted = {lv["covariate"]: lv["level"] for rec in getattr(model, "adaptation_", [])[-1:] for lv in rec["levels"]}
    if choices:
        cols = st.columns(len(choices))
        for col, (name, levels) in zip(cols, choices.items(), strict=True):
            options = ["all (marginalised)", *levels]
            pick = col.selectbox(name, options, index=options.index(adapted[name]) if name in adapted else 0,
                                 format_func=lambda v, n=name: v if v.startswith("all") else level_label(model, n, v))
            if pick != "all (marginalised)":
                fixed[name] = pick
    c1, c2 = st.columns(2)
    step = c1.select_slider("Age resolution (years)", [0.5, 1.0, 2.0, 5.0], value=2.0)
    samples = c2.select_slider("Samples per age (M)", [500, 1000, 2000, 4000, 8000], value=1000)
    others = {k: v for k, v in {**available_demo_models(), **library().saved()}.items() if k != ss.model_name}
    compare_label = st.selectbox("Overlay a second model", ["none", *others])

    try:
        curves = curves_for(model, model_key(), tuple(fixed.items()), step, samples)
        curves = curves[curves.idp == idp]
        compare = None
        if compare_label != "none":
            other = cached_model(str(others[compare_label]))
            if idp in other.idps:
                other_key = f"{compare_label}:{others[compare_label]}"
                compare = curves_for(other, other_key, tuple(fixed.items()), step, samples)
                compare = compare[compare.idp == idp]
            else:
                st.warning(f"{compare_label} has no IDP {idp}.")
        points, z_col, job = None, None, None
        problem = model_columns_present(model, df)
        if problem is None:
            job = score_job(model, df)  # in the background: the curves are drawn without waiting for it
            points = job.result if job.status == "done" else df
            z_col = f"z:{idp}" if job.status == "done" else None
            for k, v in fixed.items():
                points = points[points[k].astype(str) == str(v)]
        else:
            st.caption(problem + " (subjects are not drawn)")
        fig = centile_fan(curves, idp, points, age=model.age_, compare=compare, compare_name=compare_label,
                          group_col=m.group_col if points is not None and m.group_col in points else None,
                          hover_col=m.id_col if points is not None and m.id_col in points else None, z_col=z_col)
        st.plotly_chart(fig, width="stretch", key="centile_fan")
        if job is not None and job.status == "failed":
            st.caption(f"Subjects drawn without z: scoring failed ({job.error})")
        elif job is not None and job.status != "done":

            @st.fragment(run_every=1.0)
            def scoring_status():
                snap = job.snapshot()
                if snap["status"] != "running":
                    st.rerun()
                st.progress(snap["fraction"], text=f"Scoring {len(df)} subjects for their z in the hover "
                                                    "(in the background; the page stays usable)")

            scoring_status()
    except Exception as exc:  # never a traceback in the UI
        show_error(exc)
