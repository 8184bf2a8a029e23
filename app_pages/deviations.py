"""Deviations: subject x IDP z heatmap, one subject's profile, extreme counts, group comparison."""

import functools

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.reports import download_panel, make_cohort_report, make_pcntoolkit_export, make_report
from dashboard.state import data_key, model_for_table, model_key, scores_or_progress, show_error
from normcore.jobs import Job
from normcore.metrics import separation_table
from normcore.plotting.tabular import deviation_profile, z_heatmap
from normcore.reports import centile_band
from normcore.tabular.anatomy import GROUP_ORDER, anatomical_group
from normcore.tabular.io import table_csv_bytes
from normcore.tabular.point_masses import at_shared_masses

st.title("Deviations")
ss = st.session_state
model, df, m = model_for_table()
try:
    scores = scores_or_progress(model, df)
except Exception as exc:
    show_error(exc)
    st.stop()
if scores is None:
    st.stop()
idps = model.idps
zcols = [f"z:{i}" for i in idps]
z = scores[zcols].to_numpy(float)
shared = at_shared_masses(scores, idps, model.point_masses_)
extreme = (np.abs(z) > 1.96) & ~shared  # a value most of the reference shares has a random z: not counted
for note in scores.attrs.get("notes", []):
    st.info(note)
n_out = int(scores["out_of_range"].sum())
if n_out:
    st.warning(f"{n_out} subject(s) are outside the model's training age range; their scores are extrapolated.")
sort_options = ["multivariate_d2", *zcols]
sort_by = st.selectbox("Sort subjects by", sort_options)
st.plotly_chart(z_heatmap(scores, idps, id_col=m.id_col if m.id_col in scores else None, sort_by=sort_by,
                          shared=shared), width="stretch", key="z_heatmap")
if shared.any():
    st.caption(f"Grey: {int(shared.sum())} value(s) at a value most of the reference shares (e.g. 0 for a structure "
               "most brains lack); their z is drawn at random within that share and tells nothing of the person, so "
               "they are neither coloured nor counted below.")

st.subheader("One subject")
ids = scores[m.id_col].astype(str).tolist() if m.id_col in scores else [str(i) for i in range(len(scores))]
order = np.argsort(-scores["multivariate_d2"].to_numpy(float))
pick = st.selectbox("Subject (most atypical first)", [ids[i] for i in order])
row = ids.index(pick)
st.plotly_chart(deviation_profile(scores, row, idps, shared=shared), width="stretch", key="profile")
st.caption(f"multivariate score d² = {scores['multivariate_d2'].iloc[row]:.1f} "
           f"(z scale {scores['multivariate_z'].iloc[row]:.2f}); "
           f"{int(extreme[row].sum())} IDP(s) with |z| > 1.96")
one = pd.DataFrame({"IDP": idps, "region": [anatomical_group(c) for c in idps],
                    "value": [scores[c].iloc[row] if c in scores else np.nan for c in idps],
                    "centile (%)": (100 * scores[[f"centile:{c}" for c in idps]].iloc[row].to_numpy(float)).round(1),
                    "z": scores[zcols].iloc[row].to_numpy(float).round(2)})
one["band"] = [centile_band(c / 100) for c in one["centile (%)"]]
st.caption("Every IDP of this subject, grouped by region (search the table with its magnifier; sort by clicking a "
           "column header).")
st.dataframe(one.sort_values(["region", "z"], key=lambda col: col if col.name != "region" else
                             col.map({g: i for i, g in enumerate(GROUP_ORDER)})),
             hide_index=True, width="stretch", height=260)


scans = ss.get("mri_results") or {}
scan = None
if scans:  # a scan scored on the MRI page can join this subject's report
    scan = st.selectbox("Add this subject's MRI scan (scored on the MRI page) to the report", ["none", *scans],
                        key="report_scan")
    scan = None if scan == "none" else scan
report_key = (model_key(), *data_key(), pick, scan)
if st.button(f"Make a report of {pick} (HTML and PDF)"):
    ss.report_job = Job(make_report, model, scores, pick if m.id_col in scores else str(row),
                        m.id_col if m.id_col in scores else None, mri_result=scans.get(scan) if scan else None,
                        name="report").start()
    ss.report_job_for = report_key
download_panel("report_job", report_key)

st.subheader("Extreme deviations (|z| > 1.96)")
c1, c2 = st.columns(2)
per_idp = pd.DataFrame({"idp": idps, "count": extreme.sum(0),
                        "share": extreme.mean(0).round(3)}).sort_values("count", ascending=False)
c1.dataframe(per_idp, hide_index=True, width="stretch", height=260)
per_subject = pd.DataFrame({"subject": ids, "count": extreme.sum(1)}).sort_values("count",
                                                                                             ascending=False)
c2.dataframe(per_subject, hide_index=True, width="stretch", height=260)

if m.group_col and m.group_col in scores:
    patients = scores[m.group_col].astype(str) != str(m.control_value)
    if patients.any() and (~patients).any():
        st.subheader("Patients vs controls")
        separation_for = (model_key(), *data_key(), m.group_col, str(m.control_value))
        if ss.get("separation_for") != separation_for:  # a bootstrap per score: not redone on every widget rerun
            table = separation_table(scores, idps, patients.to_numpy(), n_boot=200)
            ss.separation, ss.separation_for = table, separation_for
        table = ss.separation
        st.dataframe(table.round(4), hide_index=True, width="stretch")
        if st.button("Make a cohort report (HTML and PDF)"):
            ss.cohort_report_job = Job(make_cohort_report, model, scores, m.group_col, m.control_value,
                                       m.id_col if m.id_col in scores else None, name="cohort-report").start()
            ss.cohort_report_job_for = (model_key(), *data_key())
        download_panel("cohort_report_job", (model_key(), *data_key()))
st.subheader("Downloads")
st.download_button("Download all scores (CSV, same columns as the CLI)", functools.partial(table_csv_bytes, scores),
                   file_name="normdiff-scores.csv", mime="text/csv")
st.caption("For PCNtoolkit users: the tables its `predict` writes (Z, centiles 5/25/50/75/95 in the IDPs' units, "
           "per-IDP statistics), as `score --format pcntoolkit` writes them; the centiles are the model's at each "
           "subject's covariates, sampled on the age grid scoring uses.")
if st.button("Prepare the PCNtoolkit tables"):
    ss.pcn_job = Job(make_pcntoolkit_export, model, df, scores, m.id_col if m.id_col in df else None,
                     name="pcntoolkit-export").start()
    ss.pcn_job_for = (model_key(), *data_key())
download_panel("pcn_job", (model_key(), *data_key()))
