"""Change between visits: calibrated change scores per pair of visits, and one subject's trajectory."""

import functools

import pandas as pd
import streamlit as st

from dashboard.state import age_grid_for, data_key, model_for_table, model_key, show_error
from normcore.jobs import Job
from normcore.plotting.tabular import visit_trajectory
from normcore.tabular.column_matching import VISIT_NAMES, guess_column
from normcore.tabular.io import table_csv_bytes
from normcore.tabular.longitudinal import MIN_CONTROL_PAIRS, change_scores

st.title("Change between visits")
ss = st.session_state
model, df, m = model_for_table()
if not m.id_col:
    st.info("Map the subject ID column on the Data page: visits are matched by subject ID.")
    st.stop()
used = {m.id_col, model.age_, *model.covariates_, *model.idps_, m.group_col}
candidates = [c for c in df.columns if c not in used]
guess = guess_column(candidates, VISIT_NAMES)  # names compared after normalisation
if not candidates:
    st.info("The active table has no column left to serve as the visit (one row per visit is expected).")
    st.stop()
c1, c2 = st.columns(2)
visit_col = c1.selectbox("Visit column (numbers, or labels whose digits sort as numbers: ses-2 before ses-10)",
                         candidates, index=candidates.index(guess) if guess in candidates else 0)
rho = c2.number_input("Visit-to-visit correlation of z (used only with fewer than "
                      f"{MIN_CONTROL_PAIRS} pairs of control visits)", 0.0, 0.99, 0.9, 0.01)
st.caption("Each visit is scored against the model; the change in z between consecutive visits is divided by "
           "its healthy spread, sqrt(2(1 - rho)), so that healthy change scores are standard normal. rho is "
           "estimated from the table's controls with two visits when there are enough of them.")
key = (model_key(), *data_key(), visit_col, m.group_col, m.control_value, rho)
job = ss.get("change_job")
if st.button("Compute change scores", type="primary", disabled=job is not None and job.running):
    ss.change_job = Job(change_scores, model, df, m.id_col, visit_col, group_col=m.group_col,
                        control_value=m.control_value, rho=rho, name="change").start()
    ss.change_key = key
    st.rerun()


def progress_panel():  # polls (a fragment rerun every second) only while the job runs; its end reruns the page
    job = ss.get("change_job")
    if job is None or not job.running:
        if ss.get("change_watched") is job and job is not None:
            ss.change_watched = None
            st.rerun()
        return
    ss.change_watched = job
    snap = job.snapshot()
    st.progress(snap["fraction"], text="Scoring every visit…")
    if st.button("Cancel", key="change_cancel"):
        job.cancel()


st.fragment(run_every=1.0 if job is not None and job.running else None)(progress_panel)()
job = ss.get("change_job")
if job is None or job.running or ss.get("change_key") != key:
    st.stop()
if job.status != "done":
    show_error(ValueError(job.error or f"the computation was {job.status}"))
    st.stop()
result = job.result
for note in result.notes:
    st.info(note)
table = result.table.sort_values("multivariate_change", ascending=False)
st.success(f"{len(table)} pairs of consecutive visits; visit-to-visit correlation {result.rho_source}.")
st.dataframe(table[[m.id_col, "visit_from", "visit_to", "multivariate_change", "n_significant_change",
                    "significant_idps"]], width="stretch", hide_index=True, height=240)
st.download_button("Download the change scores (CSV, same columns as the CLI)",
                   functools.partial(table_csv_bytes, result.table),
                   file_name="change-scores.csv", mime="text/csv")

st.subheader("One subject's visits on the centile curves")
s1, s2 = st.columns(2)
subject = s1.selectbox("Subject (largest change first)", pd.unique(table[m.id_col].astype(str)))
pair = table[table[m.id_col].astype(str) == subject].iloc[0]
ranked = sorted(model.idps_, key=lambda c: -abs(pair.get(f"zchange:{c}", 0.0) or 0.0))
idp = s2.selectbox("IDP (largest change first)", ranked)
visits = result.scores[result.scores[m.id_col].astype(str) == subject]
fixed = {c: str(visits[c].iloc[0]) for c in model.covariates_ if str(visits[c].iloc[0]) in model.levels_[c]}


@st.cache_data(max_entries=16, show_spinner="Drawing centile curves…")
def curves_for(_model, model_token, fixed_items):
    return _model.centiles(age_grid_for(_model, 2.0), fixed=dict(fixed_items), n_samples=1000)


try:
    curves = curves_for(model, model_key(), tuple(sorted(fixed.items())))
    st.plotly_chart(visit_trajectory(curves, idp, visits, age=model.age_, visit_col=visit_col, z_col=f"z:{idp}",
                                     title=f"{subject}: {idp}"), width="stretch", key="trajectory")
    st.caption(f"zchange {pair[f'zchange:{idp}']:+.2f} (|zchange| > 1.96: outside the central 95% of healthy "
               f"change); rho for this IDP {result.rho[idp]:.2f}.")
except Exception as exc:
    show_error(exc)
