"""Data: choose or upload a table, map its columns, review the validation report."""

import pandas as pd
import streamlit as st

from dashboard.demo import demo_cohort, demo_truth
from dashboard.state import Mapping, clear_scores, remember_table, set_data
from normcore import InputError
from normcore.tabular import read_table, validate_table
from normcore.tabular.column_matching import AGE_NAMES, GROUP_NAMES, ID_NAMES, guess_column, guess_usual_covariates
from normcore.tabular.synthetic import SyntheticTruth
from normcore.tabular.validation import is_qc_column

st.title("Data")
ss = st.session_state

source = st.radio("Source", ["Upload a CSV", "Demo cohort", "Generate a synthetic cohort"], horizontal=True)
if source == "Upload a CSV":
    upload = st.file_uploader("CSV table, one row per subject (max 200 MB)", type=["csv", "tsv", "txt", "xlsx", "xls"])
    if upload is not None and ss.get("upload_id") != upload.file_id:
        try:
            frame = read_table(upload.getvalue(), name=upload.name)
        except InputError as exc:
            st.error(str(exc))
        else:
            ss.upload_id = upload.file_id
            set_data(frame, f"upload: {upload.name}")
            numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
            id_col = guess_column(list(frame.columns), ID_NAMES)
            group_col = guess_column(list(frame.columns), GROUP_NAMES)
            others = [c for c in numeric if c not in (id_col, group_col)]  # an unnamed age: the first other number
            age = guess_column(list(frame.columns), AGE_NAMES) or (others[0] if others else None)
            controls = [v for v in ("control", "controls", "HC", "healthy", "CN", "0")
                        if group_col and v in frame[group_col].astype(str).unique()]
            covariates = [c for c in guess_usual_covariates(list(frame.columns)) if c != age]
            ss.mapping = Mapping(age=age, covariates=covariates,
                                 idps=[c for c in numeric if c not in (age, id_col, group_col, *covariates)
                                       and not is_qc_column(c)],
                                 id_col=id_col, group_col=group_col, control_value=controls[0] if controls else None)
            ss.read_notes = list(frame.attrs.get("read_notes", []))
            remember_table(frame, f"upload: {upload.name}", ss.mapping)
            clear_scores()
    for note in ss.get("read_notes", []) if upload is not None else []:
        st.info(f"Read {upload.name}: {note}.")
elif source == "Demo cohort":
    if st.button("Use the demo cohort"):
        truth = demo_truth()
        set_data(demo_cohort(), "demo: synthetic cohort (D=10)")
        ss.mapping = Mapping("age", ["sex"], truth.idp_names, "sub_id", "group", "control")
        clear_scores()
else:
    c1, c2, c3, c4 = st.columns(4)
    n = c1.number_input("controls", 100, 50000, 2000, step=100)
    d = c2.number_input("IDPs", 2, 200, 10)
    patients = c3.number_input("patients", 0, 5000, 100)
    seed = c4.number_input("seed", 0, 10**6, 0)
    if st.button("Generate"):
        truth = SyntheticTruth.create(d=int(d), seed=int(seed))
        set_data(truth.sample(int(n), seed=int(seed) + 1, patients=int(patients)),
                 f"synthetic: N={n}, D={d}, seed={seed}")
        ss.mapping = Mapping("age", ["sex"], truth.idp_names, "sub_id", "group", "control")
        clear_scores()

df = ss.data
st.subheader(f"Active table: {ss.data_name} ({len(df)} rows × {df.shape[1]} columns)")
st.dataframe(df.head(50), width="stretch", height=240)

st.subheader("Column mapping")
m: Mapping = ss.mapping
cols = list(df.columns)
numeric = [c for c in cols if pd.api.types.is_numeric_dtype(df[c])]
c1, c2, c3 = st.columns(3)
age = c1.selectbox("Age column", cols, index=cols.index(m.age) if m.age in cols else 0)
covs = c2.multiselect("Categorical covariates", [c for c in cols if c != age],
                      default=[c for c in m.covariates if c in cols and c != age])
id_col = c3.selectbox("Subject ID column", [None, *cols], index=([None, *cols].index(m.id_col)
                                                                  if m.id_col in cols else 0))
c4, c5 = st.columns(2)
group_col = c4.selectbox("Group / diagnosis column (optional)", [None, *cols],
                         index=[None, *cols].index(m.group_col) if m.group_col in cols else 0)
control_value = None
if group_col:
    values = sorted(df[group_col].astype(str).unique().tolist())[:200]
    control_value = c5.selectbox("Value marking healthy controls", values,
                                 index=values.index(str(m.control_value)) if str(m.control_value) in values else 0)
pattern = st.text_input("Pick IDPs by pattern (regular expression, optional)", "")
candidates = [c for c in numeric if c not in (age, id_col, group_col, *covs)]
if pattern:
    try:
        import re

        rx = re.compile(pattern)
        candidates = [c for c in candidates if rx.search(c)]
    except re.error as exc:
        st.error(f"Invalid pattern: {exc}")
idps = st.multiselect("IDPs", candidates, default=[c for c in (m.idps if not pattern else candidates)
                                                    if c in candidates])
ss.mapping = Mapping(age, covs, idps, id_col, group_col, control_value)

st.subheader("Validation report")
if not idps:
    st.warning("Choose at least one IDP column.")
else:
    controls = (df[group_col].astype(str) == str(control_value)).to_numpy() if group_col else None
    report = validate_table(df, age, covs, idps, id_col=id_col, control_mask=controls)
    if report.findings:
        st.dataframe(report.to_frame(), width="stretch", hide_index=True)
    for f in report.errors:
        st.error(f.message)
    if not report.errors:
        incomplete = len(report.rows_with_missing) - len(report.rows_missing_covariates)
        st.success(f"{len(df) - len(report.rows_missing_covariates)} usable rows"
                   + (f" ({incomplete} missing some IDP values)" if incomplete else "") + f", {len(idps)} IDPs, "
                   f"age {report.age_range[0]:.1f}–{report.age_range[1]:.1f}")
    a1, a2 = st.columns(2)
    if report.rows_with_missing and a1.button(f"Drop {len(report.rows_with_missing)} row(s) with missing values"):
        set_data(df.drop(index=df.index[report.rows_with_missing]).reset_index(drop=True), ss.data_name)
        ss.data_name += " (incomplete rows dropped)"
        st.rerun()
    if report.constant_idps and a2.button(f"Drop {len(report.constant_idps)} constant IDP column(s)"):
        set_data(df.drop(columns=report.constant_idps), ss.data_name)
        ss.mapping.idps = [c for c in idps if c not in report.constant_idps]
        ss.data_name += " (constant columns dropped)"
        st.rerun()
