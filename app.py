"""NormDiff landing page (the full multipage dashboard is built on top of normcore)."""

import numpy as np
import pandas as pd
import streamlit as st

from normcore import __version__
from normcore.device import describe_device, resolve_device
from normcore.plots import centile_fan
from normcore.synthetic import SyntheticTruth

st.set_page_config(page_title="NormDiff", layout="wide")
st.title("NormDiff: normative modelling with diffusion models")
st.markdown(
    "Where does each person sit against a healthy reference population? NormDiff fits a conditional "
    "diffusion model of all brain measures (IDPs) jointly given age, sex and site, and returns centiles, "
    "deviation z-scores and centile curves. Batch work runs from the command line: "
    "`python -m normcore fit | score | centiles | sample | synth` (see the README)."
)
st.sidebar.write(f"normcore {__version__}")
st.sidebar.write(f"Compute device: {describe_device(resolve_device('auto'))}")


@st.cache_data(max_entries=4)
def synthetic_view(d: int, seed: int, idp_index: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    truth = SyntheticTruth.create(d=d, seed=seed)
    cohort = truth.sample(800, seed=seed + 1)
    ages = np.arange(16, 95, 1.0)
    name = truth.idp_names[idp_index]
    qs = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    rows = [pd.DataFrame({"age": ages, "idp": name, "quantile": q, "value": truth.quantile(q, ages, 0, name)})
            for q in qs]
    return pd.concat(rows), cohort[cohort.sex == 0], f"{name} ({truth.kinds[idp_index]})"


st.subheader("The synthetic benchmark: exact centiles of a known truth")
idp_index = st.slider("IDP", 0, 9, 0)
curves, subjects, label = synthetic_view(10, 0, idp_index)
st.plotly_chart(centile_fan(curves, curves["idp"].iloc[0], subjects, title=f"True centiles of {label}, females"),
                use_container_width=True)
st.caption("Tests and benchmarks compare the fitted models' centile curves with these exact curves.")
