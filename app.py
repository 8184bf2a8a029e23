"""NormDiff dashboard: router and shared frame (sidebar with the active data, model and device).

The pages live in app_pages/, not pages/: Streamlit treats a pages/ folder as an old-style multipage app
until st.navigation has run once in the server process, so a bookmarked page opened first on a fresh
server ran without this router (no sidebar, no demo data or model).
"""

import streamlit as st

from dashboard.state import init_state, restore_last_work, show_error
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
    st.Page("app_pages/change.py", title="Change between visits", icon=":material/timeline:"),
    st.Page("app_pages/dependence.py", title="Joint dependence", icon=":material/hub:"),
    st.Page("app_pages/calibration.py", title="Calibration", icon=":material/verified:"),
    st.Page("app_pages/mri.py", title="MRI", icon=":material/neurology:"),
]
page = st.navigation(PAGES)

offer = st.session_state.get("restore_offer")
if offer:
    parts = [f"the table “{offer['table_name']}”" if "table_name" in offer else None,
             f"the model “{offer['model_label']}”" if "model_label" in offer else None]
    box = st.container(border=True)
    box.markdown(f"**Welcome back.** This session's link holds {' and '.join(p for p in parts if p)} from before "
                 "the page was reloaded.")
    r1, r2, _ = box.columns([1, 1, 4])
    if r1.button("Restore them", type="primary"):
        try:
            restore_last_work()
        except Exception as exc:  # a damaged autosave must not stop the page
            st.session_state.restore_offer = {}
            show_error(exc)
        st.rerun()
    if r2.button("Start afresh"):
        st.session_state.restore_offer = {}
        st.rerun()



def show_active(data_slot, model_slot) -> None:
    data_slot.caption(st.session_state.get("data_name") or "none")
    model_slot.caption(st.session_state.get("model_name") or "none")


with st.sidebar:  # filled before the page runs and again after, so that it shows what the page just made active
    st.markdown("**Active dataset**")
    data_slot = st.empty()
    st.markdown("**Active model**")
    model_slot = st.empty()
    st.markdown("**Compute device**")
    st.caption(describe_device(resolve_device("auto")))
    st.caption(f"normcore {__version__} · data stay on this machine")
show_active(data_slot, model_slot)  # a page that stops early (st.stop) drops later writes: this one stays

try:
    page.run()
finally:
    show_active(data_slot, model_slot)
