"""NormDiff dashboard: router and shared frame (sidebar with the active data, model and device).

The pages live in app_pages/, not pages/: Streamlit treats a pages/ folder as an old-style multipage app
until st.navigation has run once in the server process, so a bookmarked page opened first on a fresh
server ran without this router (no sidebar, no demo data or model).
"""

import streamlit as st

from dashboard.state import init_state
from normcore import __version__, describe_device, resolve_device

st.set_page_config(page_title="NormDiff", page_icon="🧠", layout="wide")  # a local favicon: material-icon
# favicons are fetched from fonts.gstatic.com by the frontend
init_state()

PAGES = [
    st.Page("app_pages/start.py", title="Start", icon=":material/home:", default=True),
    st.Page("app_pages/cohort.py", title="Score my cohort", icon=":material/group_add:"),
    st.Page("app_pages/data.py", title="Data", icon=":material/table:"),
    st.Page("app_pages/fit.py", title="Fit", icon=":material/model_training:"),
    st.Page("app_pages/centiles.py", title="Centile curves", icon=":material/show_chart:"),
    st.Page("app_pages/deviations.py", title="Deviations", icon=":material/grid_on:"),
    st.Page("app_pages/dependence.py", title="Joint dependence", icon=":material/hub:"),
    st.Page("app_pages/calibration.py", title="Calibration", icon=":material/verified:"),
    st.Page("app_pages/mri.py", title="MRI", icon=":material/neurology:"),
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
