"""Score my cohort: a new site's table against a reference, adapted on its own controls, checked on held-out ones."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.demo import available_reference_models
from dashboard.state import (
    Mapping,
    autosave_model,
    cached_model,
    library,
    remember_table,
    set_data,
    set_heldout,
    show_error,
    use_model,
)
from normcore import InputError
from normcore.jobs import Job
from normcore.tabular import read_table
from normcore.tabular.column_matching import (
    AGE_NAMES,
    GROUP_NAMES,
    ID_NAMES,
    guess_column,
    guess_covariate_column,
    match_columns,
    match_levels,
)
from normcore.tabular.local_cohort import adapt_to_cohort, conform_table

st.title("Score my cohort")
st.caption("Upload your site's table (healthy controls and patients). The reference is adapted to your site on "
           "your own controls in seconds (it is never refitted); a share of controls is held back to check the "
           "adapted model. Everything stays on this machine.")
ss = st.session_state
NONE = "(none)"
ONE_SITE = "(all rows are one site: name it below)"

refs = available_reference_models(library().saved())
choice = st.selectbox("1. Reference model", list(refs))
try:
    ref = cached_model(refs[choice])
except InputError as exc:
    show_error(exc)
    st.stop()
info = getattr(ref, "info_", {}) or {}
lo, hi = ref.age_range_
covariates = [f"{c} (batch effect)" if c in ref.encoder_.batch else c for c in ref.covariates_]
st.caption(f"{info.get('title', choice)}: {ref.training_summary_.get('n_train', '?')} training subjects aged "
           f"{lo:.0f}-{hi:.0f}, {len(ref.idps_)} IDPs, covariates {', '.join(covariates) or 'age only'}. "
           + (info.get("data", {}).get("terms", "")))

upload = st.file_uploader("2. Your site's table (CSV, one row per subject)", type=["csv", "tsv", "txt", "xlsx", "xls"])
if upload is not None and ss.get("cohort_upload_id") != upload.file_id:
    try:
        ss.cohort_raw, ss.cohort_name = read_table(upload.getvalue(), name=upload.name), upload.name
        ss.cohort_upload_id = upload.file_id
    except InputError as exc:
        show_error(exc)
raw: pd.DataFrame | None = ss.get("cohort_raw")
if raw is None:
    st.info("Upload a table to continue.")
    st.stop()
cols = [str(c) for c in raw.columns]
auto = match_columns(cols, [ref.age_, *ref.covariates_, *ref.idps_])

st.subheader("3. Check the column mapping")
c1, c2, c3 = st.columns(3)
id_default = guess_column(cols, ID_NAMES)
id_col = c1.selectbox("Subject ID column", [NONE, *cols], index=[NONE, *cols].index(id_default or NONE))
group_default = guess_column(cols, GROUP_NAMES)
group_col = c2.selectbox("Group / diagnosis column", [NONE, *cols], index=[NONE, *cols].index(group_default or NONE))
control_value = None
if group_col != NONE:
    values = sorted(raw[group_col].astype(str).unique().tolist())[:200]
    guess = next((v for v in values if v.lower() in ("control", "controls", "hc", "healthy", "cn")), values[0])
    control_value = c3.selectbox("Value marking healthy controls", values, index=values.index(guess))
else:
    c3.caption("Without a group column every row is treated as a healthy control.")

columns: dict[str, str] = {}
constants: dict[str, str] = {}
levels: dict[str, dict[str, str]] = {}
a1, a2 = st.columns(2)
age_default = auto.get(ref.age_) or guess_column(cols, (ref.age_, *AGE_NAMES))
columns[ref.age_] = a1.selectbox(f"Age column (model: {ref.age_})", cols,
                                 index=cols.index(age_default) if age_default in cols else 0)
coding = info.get("data", {}).get("sex_coding", {})
for cov in ref.covariates_:
    is_site = cov.lower() in ("site", "scanner", "batch")
    level_names = coding if cov.lower() in ("sex", "gender") else None
    default = auto.get(cov) or guess_covariate_column(  # by name, or (not a site) by values that are model levels
        raw, cov, None if is_site else ref.levels_[cov], level_names, exclude=(columns[ref.age_], id_col, group_col))
    options = [ONE_SITE, *cols] if is_site else cols
    pick = a2.selectbox(f"Column for the model's {cov!r}", options, placeholder="Choose the column",
                        index=options.index(default) if default in options else (0 if is_site else None),
                        key=f"cohort_cov_{cov}")  # no guess: the user chooses (never the first column silently)
    if pick is None:
        continue
    if pick == ONE_SITE:
        constants[cov] = a2.text_input(f"Name of your {cov}", "my_site", key=f"cohort_const_{cov}").strip() or "my_site"
        continue
    columns[cov] = pick
    if not is_site:
        model_levels = ref.levels_[cov]
        found = match_levels(raw[pick], model_levels, level_names)
        labels = {lv: f"{lv} ({coding[lv]})" if lv in coding else lv for lv in model_levels}
        frame = pd.DataFrame({"your value": list(found), "model level": [labels.get(v) for v in found.values()]})
        edited = st.data_editor(frame, key=f"cohort_levels_{cov}", hide_index=True, disabled=["your value"],
                                column_config={"model level": st.column_config.SelectboxColumn(
                                    f"model's {cov}", options=list(labels.values()))})
        back = {v: k for k, v in labels.items()}
        levels[cov] = {row["your value"]: back.get(row["model level"]) for _, row in edited.iterrows()
                       if row["model level"] in back}
        unmapped = [v for v in found if v not in levels[cov]]
        if unmapped:
            st.error(f"Map every value of {pick!r} to a model level: {unmapped[:5]} are not mapped.")

idp_frame = pd.DataFrame({"model IDP": ref.idps_, "your column": [auto.get(c, NONE) for c in ref.idps_]})
n_auto = int((idp_frame["your column"] != NONE).sum())
with st.expander(f"IDPs: {n_auto} of {len(ref.idps_)} matched automatically (names compared after "
                 "normalisation; check and edit)", expanded=n_auto < len(ref.idps_) and n_auto < 30):
    idp_frame = st.data_editor(idp_frame, key="cohort_idps", hide_index=True, disabled=["model IDP"], height=300,
                               column_config={"your column": st.column_config.SelectboxColumn(
                                   "your column", options=[NONE, *cols])})
for _, row in idp_frame.iterrows():
    if row["your column"] != NONE:
        columns[row["model IDP"]] = row["your column"]
unused = [c for c in cols if c not in columns.values() and c not in (id_col, group_col)]
if unused:
    st.caption(f"Columns not used: {', '.join(unused[:15])}{' …' if len(unused) > 15 else ''}")

st.subheader("4. Adapt and score")
holdout = st.slider("Share of your controls held back to check the adapted model", 0.0, 0.5, 0.2, 0.05)
keep = [c for c in (id_col, group_col) if c != NONE]
try:
    table = conform_table(raw, ref, columns, levels, constants, keep=keep)
    controls = (table[group_col].astype(str) == str(control_value)).to_numpy() if group_col != NONE \
        else np.ones(len(table), bool)
    age = pd.to_numeric(table[ref.age_], errors="coerce")
    outside = int(((age < lo) | (age > hi)).sum())
    if outside:
        st.warning(f"⚠ {outside} subject(s) are aged outside the reference's range {lo:.0f}-{hi:.0f}: their "
                   "centiles are extrapolated and flagged out_of_range.")
    st.write(f"{int(controls.sum())} controls and {int((~controls).sum())} other subjects; "
             f"{sum(c in columns for c in ref.idps_)} IDPs mapped.")
except InputError as exc:
    show_error(exc)
    st.stop()

job = ss.get("cohort_job")
running = job is not None and job.running
if st.button("Adapt to my site and score", type="primary", disabled=running):
    ss.cohort_job = Job(adapt_to_cohort, ref, table, controls, holdout, name="adapt").start()
    ss.cohort_job_info = {"table": table, "reference": choice, "id_col": id_col if id_col != NONE else None,
                          "group_col": group_col if group_col != NONE else None, "control_value": control_value,
                          "site": ", ".join(constants.values()) or "the uploaded sites", "name": ss.cohort_name}
    st.rerun()


@st.fragment(run_every=1.0 if running else None)
def adapt_panel():
    job = ss.get("cohort_job")
    if job is None:
        return
    snap = job.snapshot()
    if snap["status"] == "running":
        st.progress(snap["fraction"], text=f"Adapting: {(snap['last'] or {}).get('stage', 'starting')}")
        if st.button("Cancel", key="cohort_cancel"):
            job.cancel()
        return
    if snap["status"] == "failed":
        st.error(snap["error"])
        return
    if snap["status"] == "cancelled":
        st.warning("Adaptation cancelled; nothing changed.")
        return
    result, meta = job.result, ss.cohort_job_info
    if ss.get("cohort_done") is not job:
        table = meta["table"]
        use_model(result.model, f"{meta['reference']} adapted to {meta['site']}")
        set_data(table, f"cohort: {meta['name']}")
        ss.mapping = Mapping(ref.age_, list(ref.covariates_), [c for c in ref.idps_ if c in table.columns],
                             meta["id_col"], meta["group_col"], meta["control_value"])
        set_heldout(list(result.held_out))
        autosave_model(result.model, f"{meta['reference']} adapted to {meta['site']}")
        remember_table(table, f"cohort: {meta['name']}", ss.mapping)
        ss.cohort_done = job
        st.rerun()
    check = result.check
    if check:
        c = st.columns(4)
        c[0].metric("Held-out controls", check["n"])
        c[1].metric("Coverage of the 95% interval", f"{check['coverage95']:.3f}", help="should be near 0.95")
        c[2].metric("z mean / SD", f"{check['z_mean']:+.2f} / {check['z_sd']:.2f}", help="should be near 0 / 1")
        if check.get("pit_ks_pass_rate") is not None:
            c[3].metric("PIT-KS pass rate", f"{check['pit_ks_pass_rate']:.2f}")
    for warning in result.warnings:
        st.warning(warning)
    st.success(f"Adapted on {len(result.adapted_on)} controls in {job.finished - job.started:.1f} s. Every page now "
               "uses the adapted model and your table; Calibration checks the held-out controls.")
    p1, p2, p3 = st.columns(3)
    p1.page_link("app_pages/deviations.py", label="Deviations", icon=":material/grid_on:")
    p2.page_link("app_pages/centiles.py", label="Centile curves", icon=":material/show_chart:")
    p3.page_link("app_pages/calibration.py", label="Calibration", icon=":material/verified:")


adapt_panel()
