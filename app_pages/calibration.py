"""Calibration: PIT histograms, coverage, ACE per IDP, KS results, memorisation for the active model."""

import pandas as pd
import streamlit as st

from dashboard.state import (
    calibration_checks,
    data_key,
    fitted_in_sample,
    heldout_rows,
    model_for_table,
    model_key,
    show_error,
)
from normcore.jobs import Job
from normcore.plotting.tabular import pit_histogram

st.title("Calibration on held-out controls")
ss = st.session_state
model, df, m = model_for_table()
held = heldout_rows()
card_held = set((getattr(model, "info_", {}) or {}).get("held_out", {}).get("ids", []))
if held is not None:
    df = df.loc[[r for r in held if r in df.index]]
    st.success(f"Checking the {len(df)} controls held out of this model's fit or adaptation: it never saw them.")
elif card_held and m.id_col and m.id_col in df:
    df = df[df[m.id_col].astype(str).isin(card_held)]
    st.success(f"Checking the {len(df)} rows listed as held out in the model card: the model never saw them.")
elif fitted_in_sample():
    st.error("⚠ The active model was fitted on these very controls, without holding any back: a calibration "
             "check on them would look better than the model is. Refit with a held-out share on the Fit page "
             "(the default), or load a table the model has not seen.")
    st.stop()
else:
    st.caption("Uses the controls of the active table. For an honest check they must not have been used for "
               "fitting (the demo cohort is drawn independently of the demo models' training data).")
if df.empty:
    st.warning("No held-out rows of this model are in the active table.")
    st.stop()
samples = st.select_slider("Samples per subject (M)", [200, 500, 1000, 2000], value=200)
key = (model_key(), *data_key(), len(df), samples)
job = ss.get("calib_job") if ss.get("calib_job_for") == key else None
if st.button("Run the calibration checks", type="primary", disabled=job is not None and job.running):
    if ss.get("calib_job") is not None:
        ss.calib_job.cancel()  # one run of the checks at a time per session (e.g. M changed while one ran)
    job = ss.calib_job = Job(calibration_checks, model, df, m.group_col if m.group_col in df else None,
                             m.control_value, samples, name="calibration").start()
    ss.calib_job_for = key


@st.fragment(run_every=1.0)
def checks_progress() -> None:
    """Progress of the running checks with a Cancel button; the whole page reruns when they end."""
    snap = job.snapshot()
    if snap["status"] != "running":
        st.rerun()
    stage = (snap["last"] or {}).get("stage")
    st.progress(snap["fraction"], text=f"Running the calibration checks: {stage or 'starting'}… (in the background: "
                                       "the other pages stay usable)")
    if st.button("Cancel", key="calib_cancel"):
        job.cancel()


if job is None:
    st.stop()
if job.running:
    checks_progress()
    st.stop()
if job.status == "cancelled":
    st.warning("The calibration checks were cancelled: nothing was computed.")
    st.stop()
if job.status != "done":
    st.error(job.error or f"The calibration checks {job.status}.")
    st.stop()
try:
    rep, scores = job.result
    agg = rep["aggregate"]
    c = st.columns(4)
    c[0].metric("Coverage 95% (mean over IDPs)", f"{agg['coverage95_mean']:.3f}")
    c[1].metric("Coverage 50%", f"{agg['coverage50_mean']:.3f}")
    c[2].metric("PIT-KS pass rate (α=0.01)", f"{agg['pit_ks_pass_rate_0.01']:.2f}")
    c[3].metric("Held-out ACE", f"{agg['ace_heldout_mean']:.4f}")
    table = pd.DataFrame(rep["per_idp"])
    idp = st.selectbox("PIT histogram of IDP", model.idps)
    scores = m.controls(scores)
    st.plotly_chart(pit_histogram(scores[f"centile:{idp}"], title=f"PIT of {idp}"),
                    width="stretch", key="pit")
    st.subheader("Per IDP")
    st.dataframe(table[["idp", "coverage50", "coverage90", "coverage95", "coverage95_se", "ace_heldout",
                        "pit_ks", "pit_ks_p", "z_mean", "z_sd", "msll", "expv"]].round(4),
                 hide_index=True, width="stretch")
    ks = rep["ks_by_age_band"]
    dep = rep["dependence"]
    st.markdown(f"**Two-sample KS per age band** (real vs model samples, BH-corrected): "
                f"{ks['rejected_bh']} of {ks['n_tests']} tests rejected.  \n"
                f"**Dependence**: Spearman RMS gap {dep['frobenius_model']:.4f} (model) vs "
                f"{dep['frobenius_product_of_marginals']:.4f} (product of marginals).")
    if "memorisation" in rep:
        st.json(rep["memorisation"])
    else:
        st.caption("Memorisation needs the training table, which models do not store (privacy): run "
                   "`python -m normcore evaluate MODEL HOLDOUT.csv --train TRAIN.csv`.")
except Exception as exc:
    show_error(exc)
