"""NormDiff dashboard: router and shared frame (sidebar with the active data, model and device)."""

import streamlit as st

from normcore import __version__
from normcore.device import describe_device, resolve_device
from ui_state import init_state

st.set_page_config(page_title="NormDiff", page_icon="🧠", layout="wide")  # a local favicon: material-icon
# favicons are fetched from fonts.gstatic.com by the frontend
init_state()

PAGES = [
    st.Page("pages/start.py", title="Start", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/table:"),
    st.Page("pages/fit.py", title="Fit", icon=":material/model_training:"),
    st.Page("pages/centiles.py", title="Centile curves", icon=":material/show_chart:"),
    st.Page("pages/deviations.py", title="Deviations", icon=":material/grid_on:"),
    st.Page("pages/dependence.py", title="Joint dependence", icon=":material/hub:"),
    st.Page("pages/calibration.py", title="Calibration", icon=":material/verified:"),
    st.Page("pages/mri.py", title="MRI", icon=":material/neurology:"),
]
page = st.navigation(PAGES)

with st.sidebar:
    st.markdown("**Active dataset**")
    st.caption(st.session_state.get("data_name") or "none")
    st.markdown("**Active model**")
    st.caption(st.session_state.get("model_name") or "none")
    st.markdown("**Compute device**")
    st.caption(describe_device(resolve_device("auto")))
    st.caption(f"normcore {__version__} · data stay on this machine")

page.run()
