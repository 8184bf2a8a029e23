"""MRI: pseudo-healthy restoration of T1 scans, anomaly and z-maps, abnormality index and its healthy centile."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.demo import demo_model_dir, demo_scans, latent_model_dir
from dashboard.reports import download_panel, make_mri_report
from dashboard.state import (
    clear_mri_results,
    collect_latent_job,
    collect_mri_job,
    imaging_model,
    init_mri_state,
    latent_model,
    latent_result_of,
    native_view_of,
    show_error,
    start_latent_job,
    start_mri_job,
)
from normcore import InputError
from normcore.imaging.anomaly import INDEX_LABELS
from normcore.imaging.io import load_mask, load_volume
from normcore.imaging.model import METHODS
from normcore.imaging.native_view import Z_DISPLAY_MAX
from normcore.imaging.pipeline import nifti_bytes
from normcore.imaging.resampling import MAX_RESAMPLINGS
from normcore.jobs import Job
from normcore.plotting.imaging import (
    cohort_table,
    most_abnormal_slice,
    native_planes_figure,
    overlay_figure,
    quality_table,
    triptych_figure,
)
from normcore.plotting.latent import (
    brain_age_figure,
    counterfactual_figure,
    counterfactual_volumes_figure,
    latent_position_figure,
    latent_profile_figure,
)
from normcore.tabular.io import table_csv_bytes

METHOD_LABELS = {"kl-inpaint": "KL-guided inpainting (default)", "plain": "Plain diffusion restoration (baseline)",
                 "autoencoder": "Autoencoder reconstruction only (baseline)"}
MAP_LABELS = {"restoration": "restoration", "anomaly": "anomaly map", "zmap": "z-map"}
SOURCES = ("Demo scans", "Upload scans")
ss = st.session_state


def checked_upload(up) -> str | None:
    """Validate an uploaded scan once per file (None when it loads; else the message)."""
    checks = ss.setdefault("mri_upload_checks", {})
    if up.file_id not in checks:
        try:
            load_volume(up.getvalue(), name=up.name)
            checks[up.file_id] = None
        except InputError as exc:
            checks[up.file_id] = str(exc)
        except Exception as exc:  # any parser failure is a message, never a traceback
            checks[up.file_id] = f"{up.name}: {type(exc).__name__}: {exc}"
    return checks[up.file_id]


def checked_mask(scan_up, mask_up) -> str | None:
    """Validate an uploaded brain mask against its scan once per pair (None when it fits; else the message)."""
    checks = ss.setdefault("mri_upload_checks", {})
    key = (scan_up.file_id, mask_up.file_id)
    if key not in checks:
        try:
            load_mask(mask_up.getvalue(), load_volume(scan_up.getvalue(), name=scan_up.name), name=mask_up.name)
            checks[key] = None
        except InputError as exc:
            checks[key] = str(exc)
        except Exception as exc:
            checks[key] = f"{mask_up.name}: {type(exc).__name__}: {exc}"
    return checks[key]


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def scan_table(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return st.data_editor(frame, key=key, hide_index=True, width="stretch", disabled=["file"], column_config={
        "file": st.column_config.TextColumn("file"),
        "age": st.column_config.NumberColumn("age (years)", min_value=0.5, max_value=120.0, step=0.5, required=True),
        "sex": st.column_config.SelectboxColumn("sex", options=["F", "M"], required=True)})


def inputs() -> list[dict]:
    """The scans to score (name, scan, mask, age, sex, register, lesion_mask); empty while incomplete."""
    demos = demo_scans()
    source = st.radio("Scans", SOURCES if demos else SOURCES[1:], horizontal=True, key="mri_source")
    if source == "Demo scans":
        st.caption("A held-out healthy IXI scan and the same scan with an implanted real MS lesion, both already on "
                   "the model grid in MNI space (no registration needed).")
        by_name = {d["name"]: d for d in demos}
        chosen = st.multiselect("Demo scans", list(by_name), default=list(by_name), key="mri_demo_choice")
        if not chosen:
            return []
        frame = pd.DataFrame({"file": chosen, "age": [float(by_name[c]["age"]) for c in chosen],
                              "sex": [str(by_name[c]["sex"]).upper() for c in chosen]})
        table = scan_table(frame, key="mri_demo_table:" + "|".join(chosen))
        if table["age"].isna().any() or table["sex"].isna().any():
            st.info("Enter the age and sex of every scan to run the restoration.")
            return []
        return [{"name": c, "scan": by_name[c]["file"], "mask": by_name[c].get("brain"), "register": False,
                 "normalised_inset_mm": by_name[c].get("normalised_inset_mm"),
                 "lesion_mask": by_name[c].get("lesion_mask"), "age": float(row.age), "sex": row.sex}
                for c, row in zip(chosen, table.itertuples(), strict=True)]

    ups = st.file_uploader("T1-weighted scans (.nii or .nii.gz)", type=["nii", "gz"], accept_multiple_files=True,
                           key="mri_uploads")
    valid = []
    for up in ups or []:
        problem = checked_upload(up)
        if problem:
            st.error(problem)
        else:
            valid.append(up)
    mask_up = None
    if len(valid) == 1:
        mask_up = st.file_uploader("Optional brain mask or label map for this scan (nonzero = brain)",
                                   type=["nii", "gz"], key="mri_mask_upload")
    c1, c2 = st.columns(2)
    stripped = c1.checkbox("Scans are skull-stripped (the brain is their nonzero voxels)", key="mri_stripped")
    in_mni = c2.checkbox("Scans are already in MNI space (skip the affine registration)", key="mri_in_mni")
    st.caption("Without a mask the pipeline decides itself: a skull-stripped scan's nonzero voxels are the brain; "
               "for a whole-head scan the registered MNI template brain, refined by intensity, is used, with a "
               "warning in the results.")
    if not valid:
        return []
    names = unique_names([up.name for up in valid])
    mask = None
    if mask_up is not None:
        problem = checked_mask(valid[0], mask_up)
        if problem:
            st.error(problem)
            return []
        mask = mask_up.getvalue()
    frame = pd.DataFrame({"file": names, "age": pd.Series([None] * len(names), dtype="float"),
                          "sex": ["F"] * len(names)})
    table = scan_table(frame, key="mri_upload_table:" + "|".join(up.file_id for up in valid))
    if table["age"].isna().any() or table["sex"].isna().any():
        st.info("Enter the age (and check the sex) of every scan to run the restoration.")
        return []
    return [{"name": name, "scan": up.getvalue(), "register": not in_mni, "age": float(row.age), "sex": row.sex,
             "mask": mask if mask is not None else (up.getvalue() if stripped else None)}
            for name, up, row in zip(names, valid, table.itertuples(), strict=True)]


def job_status(key: str, label: str, collect, cancelled: str) -> dict | None:
    """Progress and a Cancel button while the job in ``ss[key]`` runs; once it ends, ``collect()`` moves its results
    into the session (and the page reruns), or its failure or cancellation is said. Returns its snapshot."""
    job = ss.get(key)
    if job is None:
        return None
    snap = job.snapshot()
    if snap["status"] == "running":
        last = snap["last"] or {}
        st.progress(snap["fraction"], text=f"{label}: {last.get('stage', 'starting')}")
        if st.button("Cancel", key=f"{key}_cancel"):
            job.cancel()
    elif collect():
        st.rerun()
    elif snap["status"] == "failed":
        st.error(snap["error"])
    elif snap["status"] == "cancelled":
        st.warning(cancelled)
    return snap


def job_panel() -> None:
    snap = job_status("mri_job", "Restoring", collect_mri_job,
                      "The restoration was cancelled; scans finished before that are kept.")
    if snap is not None and snap["status"] == "done":
        job = ss.mri_job
        scored = len(job.result["results"]) if job.result else 0
        st.caption(f"{scored} scan(s) scored in {job.finished - job.started:.1f} s.")


def latent_job_panel() -> None:
    job_status("mri_latent_job", "Diffusion autoencoder", collect_latent_job, "The whole-brain analysis was cancelled.")


def safe_panel(panel) -> None:
    """Run a job panel (in a fragment that reruns alone every second): its errors are messages too."""
    try:
        panel()
    except Exception as exc:  # a message, never a traceback
        show_error(exc)


def restoration_fragment() -> None:  # one function per fragment: Streamlit tells fragments apart by function
    safe_panel(job_panel)


def latent_fragment() -> None:
    safe_panel(latent_job_panel)


def run_section(model) -> None:
    items = inputs()
    with st.expander("Advanced"):
        method = st.radio("Restoration method", METHODS, format_func=METHOD_LABELS.get, key="mri_method",
                          help="KL-guided inpainting re-noises only the latent regions that look unlike healthy "
                               "brains; the baselines restore everything (plain) or only auto-encode the scan.")
        resamplings = st.number_input(
            "Reslice each scan this many times to see how far its centile moves (0: off)", 0,
            MAX_RESAMPLINGS, 0, key="mri_resamplings",
            help="Each version is the scan resampled onto its own voxels moved by a random fraction of a voxel, "
                 "prepared and scored again (about 2 s each on a CPU); the centile's range over them shows how much "
                 "of it is sampling noise for this scan. Scans already on the model grid (the demo) have none.")
    job = ss.get("mri_job")
    running = job is not None and job.running
    if st.button("Run restoration", type="primary", disabled=running or not items):
        start_mri_job(model, [dict(item, resamplings=int(resamplings)) for item in items], method)
        st.rerun()
    st.fragment(run_every=1.0 if running else None)(restoration_fragment)()


def results_section(model) -> None:
    for name, message in ss.get("mri_errors", {}).items():
        st.error(f"{name}: {message}" if not message.startswith(name) else message)
    results = ss.mri_results
    if not results:
        return
    st.divider()
    summaries = [r.summary() for r in results.values()]
    if len(results) > 1:
        st.subheader("Cohort")
        table = cohort_table(summaries)
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button("Download the table (CSV)", table_csv_bytes(table), file_name="mri-indices.csv",
                           mime="text/csv")
    names = list(results)
    if ss.get("mri_scan") not in names:
        ss.mri_scan = names[-1]
    c1, c2 = st.columns([3, 1])
    name = c1.selectbox("Scan", names, key="mri_scan")
    if c2.button("Clear results"):
        clear_mri_results()
        st.rerun()
    result = results[name]
    score, prepared = result.score, result.prepared

    second = "top1" if score.headline != "top1" else "top5"
    m = st.columns(4)
    for col, key in ((0, score.headline), (2, second)):
        label = INDEX_LABELS[key]
        m[col].metric(f"Abnormality index ({label})", f"{score.index[key]:.2f}")
        m[col + 1].metric(f"Centile ({label})", f"{score.centile[key]:.0f}",
                          help="The index's centile among the healthy reference scans (see below)")
    facts = f"{name}: age {result.age:g}, sex {result.sex}, method {METHOD_LABELS[score.method]}"
    if score.latent_mask_share is not None:
        facts += f", latent mask share {score.latent_mask_share:.1%}"
    acq = prepared.facts
    if acq:
        facts += (f"; voxels up to {acq['voxel_mm']:g} mm, brain mask covers {acq['brain_coverage']:.0%} of the "
                  "template brain")
    inset = (" Each index is the mean voxel z of the scan's most abnormal share of brain"
             + (f", at least {score.index_inset_mm:g} mm inside its edge" if score.index_inset_mm else "")
             + ": the peak (top 0.05%, about 0.8 ml) answers to a focal lesion, the top 1% to more widespread change.")
    band = result.band.text() if result.band is not None else ""
    band = f" {band[:1].upper()}{band[1:]}." if band else ""
    st.caption(facts + f", {result.seconds:.1f} s. The centile is the scan's rank among {score.reference_text()} "
               "(100 = more abnormal than all of them)." + band + inset)
    if not result.index_reliable:
        failed = ", ".join(g["gate"] for g in result.quality if not g["passed"])
        st.warning(f"**Index unreliable**: this scan fails the quality gate(s) {failed} (see the table); the "
                   "index and its centile are not calibrated for it.")
    for warning in result.warnings:
        st.warning(warning)
    with st.expander("Quality gates", expanded=not result.index_reliable):
        st.dataframe(quality_table(result.quality), hide_index=True, width="stretch")

    st.subheader("Slices")
    a1, a2 = st.columns([1, 3])
    axis = a1.radio("View", ["axial", "coronal", "sagittal"], horizontal=True, key="mri_axis")
    ax = {"sagittal": 0, "coronal": 1, "axial": 2}[axis]
    n = prepared.volume.shape[ax]
    default = most_abnormal_slice(score.zmap, prepared.brain, axis)
    index = a2.slider("Slice", 0, n - 1, default, key=f"mri_slice:{name}:{axis}",
                      help="Starts at the slice with the most voxel z above 3 inside the brain.")
    st.plotly_chart(triptych_figure(prepared.volume, score.restoration, score.anomaly, axis, index,
                                    title=f"{name} · {axis} slice {index} of {n - 1}"), width="stretch")
    o1, o2 = st.columns([1, 3])
    threshold = o1.slider("z threshold", 0.5, 10.0, 3.0, 0.5, key="mri_threshold")
    opacity = o1.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="mri_opacity")
    lesion = ss.mri_lesions.get(name)
    if lesion is not None:
        o1.caption("The cyan outline is the known (implanted) lesion.")
    o2.plotly_chart(overlay_figure(prepared.volume, score.zmap, axis, index, threshold, opacity, lesion=lesion),
                    width="stretch")

    native_section(name)
    if result.brain_age is not None:
        brain_age_panel(model.brain_age_, result.brain_age, result.age, result.index_reliable)
    whole_brain_section(name)

    st.subheader("Downloads (in the scan's own space)")
    stem = name.removesuffix(".gz").removesuffix(".nii").replace(" ", "_")
    d = st.columns(4)
    for col, key in zip(d, MAP_LABELS, strict=False):
        col.download_button(f"{MAP_LABELS[key]} (.nii.gz)", functools.partial(native_map_bytes, result, key),
                            file_name=f"{stem}_{key}.nii.gz", mime="application/gzip", key=f"mri_dl_{key}",
                            on_click="ignore")
    d[3].download_button("result (.json)", json.dumps(result.summary(), indent=1, default=float),
                         file_name=f"{stem}_result.json", mime="application/json", key="mri_dl_json",
                         on_click="ignore")

    st.subheader("Report")
    st.caption("The index with its centile, quality warnings and three slices through the most anomalous region "
               "(to add the scan to a subject's IDP report, choose it on the Deviations page).")
    report_key = (name, id(result))
    if st.button(f"Make a report of {name} (HTML and PDF)", key="mri_report_button"):
        train = model.card_.get("training", {})
        ss.mri_report_job = Job(make_mri_report, result, demo_model_dir().name, train.get("n_train"),
                                model.age_range_, view=native_view_of(name), name="mri-report").start()
        ss.mri_report_job_for = report_key
    download_panel("mri_report_job", report_key)


def native_section(name: str) -> None:
    """The scan at its own resolution in three linked planes, opening on the most anomalous region."""
    st.subheader("At the scan's own resolution")
    with st.spinner("Mapping the z-map onto the scan's voxels…"):
        view = native_view_of(name)
    start = view.most_anomalous
    cols = st.columns(4)
    voxel = [cols[i].slider(label, 0, view.shape[i] - 1, int(start[i]), key=f"mri_native:{name}:{i}")
             for i, label in enumerate(("x: left → right", "y: posterior → anterior", "z: inferior → superior"))]
    threshold = cols[3].slider("z threshold ", 0.5, 10.0, 3.0, 0.5, key="mri_native_threshold")
    st.plotly_chart(native_planes_figure(view, voxel, threshold), width="stretch", key="mri_native_chart")
    st.caption(f"The scan as uploaded ({' x '.join(str(n) for n in view.shape)} voxels, reoriented to RAS without "
               f"resampling); the z-map is computed on the model grid and interpolated onto the scan's voxels for "
               f"display. It opens on the most anomalous region; {100 * view.share_above():.2f}% of brain voxels "
               f"have z > 3. Colours are clipped at z = {Z_DISPLAY_MAX:g}.")


def whole_brain_section(name: str) -> None:
    """The diffusion autoencoder's panels: whole-brain deviation and counterfactual age (after a button)."""
    folder = latent_model_dir()
    st.subheader("Whole-brain deviation")
    if folder is None:
        st.info("No diffusion autoencoder is available for the whole-brain panels. Train one with "
                "`python -m normcore mri-fit --method diffae ... --out models/mri-ixi-diffae-cpu` (the dashboard "
                "loads `models/mri-ixi-diffae-cpu`; `NORMDIFF_MRI_LATENT_MODEL` points it to another folder).")
        return
    model = latent_model(str(folder), (folder / "model.json").stat().st_mtime_ns)
    if model.grid != ss.mri_results[name].prepared.grid:
        st.info(f"The diffusion autoencoder {folder.name} works on another grid than the restoration model, so it "
                "cannot reuse this scan's preprocessing; use `python -m normcore mri-latent` on the scan.")
        return
    st.caption("A diffusion autoencoder gives the scan a compact semantic vector (what the brain looks like as a "
               "whole); a normative model of healthy people's vectors given age and sex says how far this one is "
               "from theirs. It is meant for global deviations that voxel maps miss, but on the benchmarks it does "
               "not yet find diffuse atrophy (the brain-age gap does); treat it as exploratory. "
               + (model.evidence_text() or "This model's card has no held-out measurement of it.")
               + " The same model shows the brain at other ages.")
    job = ss.get("mri_latent_job")
    running = job is not None and job.running
    latent = latent_result_of(name)
    if latent is None and st.button(f"Analyse {name} with the diffusion autoencoder", disabled=running,
                                    key="mri_latent_button"):
        start_latent_job(model, name)
        st.rerun()
    st.fragment(run_every=1.0 if running else None)(latent_fragment)()
    if latent is None:
        return
    d = latent.deviation
    m = st.columns(3)
    m[0].metric("Whole-brain deviation centile", f"{100 * d.centile:.0f}",
                help=f"Rank of the scan's multivariate deviation among {d.n_reference} healthy validation scans "
                     "(100 = more deviant than all of them).")
    m[1].metric("Multivariate z", f"{d.multivariate_z:.2f}",
                help="The per-dimension z combined (Mahalanobis distance on the normal scale). With the latent "
                     "model fitted on about a hundred scans it is not calibrated on its own; the centile (left), "
                     "the scan's rank among healthy validation scans, is.")
    m[2].metric("Cosine similarity to matched healthy", f"{d.cosine_similarity:.3f}",
                help=f"Ijishakin et al.'s score: cosine of the vector with the mean of the {model.matched_k} "
                     "same-sex healthy training scans nearest in age (lower = more deviant).")
    if not latent.reliable:
        st.warning("The scan fails a quality gate (see above): its whole-brain scores are not calibrated for it.")
    c1, c2 = st.columns(2)
    c1.plotly_chart(latent_profile_figure(d.per_dimension_z), width="stretch", key="mri_latent_profile")
    position = model.healthy_position(latent.counterfactuals.semantic, latent.scan.age, latent.scan.sex)
    c2.plotly_chart(latent_position_figure(position), width="stretch", key="mri_latent_position")

    st.subheader("Counterfactual age")
    cf = latent.counterfactuals
    a1, a2, a3 = st.columns([2, 1, 2])
    later = min(cf.ages, key=lambda a: abs(a - (cf.age + 20)))  # opens on the brain about 20 years on
    age = a1.select_slider("Show the brain at age", options=cf.ages, value=later, key=f"mri_cf_age:{name}",
                           format_func=lambda a: f"{a:g}")
    axis = a2.radio("View ", ["axial", "coronal", "sagittal"], horizontal=True, key="mri_cf_axis")
    ax = {"sagittal": 0, "coronal": 1, "axial": 2}[axis]
    n = cf.reconstruction.shape[ax]
    index = a3.slider("Slice ", 0, n - 1, n // 2, key=f"mri_cf_slice:{name}:{axis}")
    volume = cf.volumes[cf.ages.index(age)]
    brain = latent.scan.prepared.brain
    diff_max = float(np.abs(cf.differences()[:, brain]).max())
    st.plotly_chart(counterfactual_figure(cf.reconstruction, volume, cf.age, age, axis, index, diff_max=diff_max,
                                          brain=brain), width="stretch", key="mri_cf_slices")
    prior = (" The denoiser's Gaussian prior carries the healthy latents' age trend, so the change follows it."
             if model.latent_prior == "age-trend" else "")
    st.caption(f"The scan's stochastic code and semantic vector are kept; the age condition changes and the vector "
               f"moves along the healthy age trend.{prior} Differences are against the reconstruction at the scan's "
               f"own age ({cf.age:g}), so the autoencoder's blur cancels; the colour scale is fixed over all ages "
               f"(+-{diff_max:.2f}).")
    v1, v2 = st.columns(2)
    healthy = model.healthy_volumes()
    vols = latent.volumes_ml()
    v1.plotly_chart(counterfactual_volumes_figure(healthy, vols, latent.scan.sex, "ventricle_ml"), width="stretch",
                    key="mri_cf_ventricles")
    v2.plotly_chart(counterfactual_volumes_figure(healthy, vols, latent.scan.sex, "tissue_ml"), width="stretch",
                    key="mri_cf_tissue")
    stem = name.removesuffix(".gz").removesuffix(".nii").replace(" ", "_")
    st.download_button("whole-brain result (.json)", json.dumps(latent.summary(), indent=1, default=float),
                       file_name=f"{stem}_latent.json", mime="application/json", key="mri_dl_latent",
                       on_click="ignore")


def brain_age_panel(readout, brain_age, age: float, reliable: bool) -> None:
    """Brain age from the restoration model's first-stage latent: predicted age, the bias-corrected gap, its
    centile among the model's cross-fitted healthy scans, and where the gap sits among theirs (``reliable``: the
    scan passes the quality gates)."""
    b = brain_age
    st.subheader("Brain age")
    m = st.columns(3)
    m[0].metric("Brain age", f"{b.predicted_age:.0f} y",
                help="Age read from the scan's first-stage latent by a ridge regression fitted on the healthy "
                     f"training scans; its mean error on healthy scans it was not fitted to is "
                     f"{b.reference_mae_years:.1f} years.")
    m[1].metric("Brain-age gap", f"{b.gap_years:+.1f} y",
                help="Brain age minus the stated age, corrected for the read-out's pull towards the mean age "
                     "(positive = the brain looks older than healthy people of its age).")
    m[2].metric("Brain-age gap centile", f"{100 * b.centile:.0f}",
                help=f"Rank of the gap among {b.n_reference} cross-fitted healthy scans (100 = looks older than all "
                     "of them).")
    st.plotly_chart(brain_age_figure(readout.reference_ages_, readout.reference_gaps_, age, b.gap_years),
                    width="stretch", key="mri_brain_age")
    st.caption("The brain-age gap is the field's usual marker of diffuse, whole-brain change, which the voxel maps "
               f"miss. The read-out is imprecise on this model's grid (about {b.reference_mae_years:.0f} years of "
               "error on healthy scans), so only a gap well beyond the healthy band means much; a focal lesion "
               "hardly moves it.")
    if not reliable:
        st.warning("The scan fails a quality gate (see above): its brain age is not calibrated for it either.")


def native_map_bytes(result, key: str) -> bytes:
    """Deferred download: one map resampled to the scan's space, gzipped (runs when the button is clicked)."""
    return nifti_bytes(result.native_maps()[key])


st.title("MRI: pseudo-healthy restoration")
init_mri_state()
model_dir = demo_model_dir()
if model_dir is None:
    st.info("No imaging model is available. Train one on healthy T1 scans with "
            "`python -m normcore mri-fit --images SCANS/ --participants participants.csv --out models/mri-ixi-cpu` "
            "(the dashboard loads `models/mri-ixi-cpu`; the environment variable `NORMDIFF_MRI_MODEL` points it to "
            "another model folder).")
    st.stop()
try:
    mri_model = imaging_model(str(model_dir), (model_dir / "model.json").stat().st_mtime_ns)
    lo, hi = mri_model.age_range_
    train = mri_model.card_.get("training", {})
    st.caption(f"Model {model_dir.name} ({mri_model.config_name}, {mri_model.grid.spacing_mm:g} mm MNI grid "
               f"{'x'.join(map(str, mri_model.grid.shape))}), trained on {train.get('n_train', '?')} healthy scans "
               f"aged {lo:.0f}-{hi:.0f}; device {mri_model.device}. Scans stay on this machine.")
    collect_mri_job()
    run_section(mri_model)
    results_section(mri_model)
except Exception as exc:  # a message, never a traceback (st.stop/st.rerun are BaseExceptions)
    show_error(exc)
