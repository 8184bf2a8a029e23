"""Joint dependence: Spearman correlation of real data vs model samples, per age band."""

import numpy as np
import streamlit as st

from dashboard.state import data_key, model_for_table, model_key, show_error
from normcore.metrics import frobenius_gap, product_of_marginals
from normcore.plotting.tabular import correlation_heatmaps

st.title("Joint dependence between IDPs")
ss = st.session_state
model, df, m = model_for_table()
controls = m.controls(df).reset_index(drop=True)
default = model.idps[: min(12, len(model.idps))]
idps = st.multiselect("IDPs", model.idps, default=default)
lo, hi = float(controls[model.age_].min()), float(controls[model.age_].max())
band = st.slider("Age band", lo, hi, (lo, hi), step=1.0)
if len(idps) < 2:
    st.info("Choose at least two IDPs.")
    st.stop()
key = (model_key(), *data_key(), len(controls))
try:
    if ss.get("dep_key") != key:
        with st.spinner("Sampling the model at the controls' covariates…"):
            cov = controls[[model.age_, *model.covariates_]]
            ss.dep_samples, ss.dep_key = model.sample(cov, n=1, seed=0), key
    gen = ss.dep_samples
    age = model.age_
    sel = (controls[age] >= band[0]) & (controls[age] <= band[1])
    real, fake = controls[sel], gen[sel.to_numpy()]
    if len(real) < 10:
        st.warning("Fewer than 10 controls in this band.")
        st.stop()
    st.plotly_chart(correlation_heatmaps(real, fake, idps), width="stretch", key="corr")
    pom = product_of_marginals(gen, age, model.idps)[sel.to_numpy()]
    c1, c2 = st.columns(2)
    c1.metric("Spearman RMS gap: model", f"{frobenius_gap(real[idps].to_numpy(), fake[idps].to_numpy()):.3f}")
    c2.metric("… product of marginals (no dependence)",
              f"{frobenius_gap(real[idps].to_numpy(), pom[idps].to_numpy()):.3f}")
    st.caption(f"{len(real)} controls aged {band[0]:.0f}–{band[1]:.0f}; one model sample per control at the "
               "same covariates. The product of marginals keeps each IDP's distribution but shuffles IDPs "
               f"independently within 5-year age bins. Mean |ρ| real: "
               f"{np.abs(np.corrcoef(real[idps].rank().to_numpy(), rowvar=False)).mean():.2f}")
except Exception as exc:
    show_error(exc)
