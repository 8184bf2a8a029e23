"""Fit: train a model off the script thread with live progress; save, load, download, upload models."""

import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard.demo import available_demo_models
from dashboard.state import (
    autosave_model,
    data_key,
    library,
    model_key,
    set_heldout,
    show_error,
    use_model,
    use_saved_model,
)
from normcore import InputError
from normcore.jobs import Job
from normcore.persistence import model_dir_to_zip
from normcore.plotting.tabular import loss_curve
from normcore.registry import DIFFUSION, SAVABLE, TABULAR_MODELS, load_model, make_model
from normcore.tabular.fit_notes import fit_notes
from normcore.tabular.splits import held_out_split

st.title("Fit a normative model")
ss = st.session_state
m = ss.mapping
df = ss.data
controls = m.controls(df)
st.caption(f"Training table: {ss.data_name}: {len(controls)} controls, {len(m.idps)} IDPs, "
           f"covariates age + {', '.join(m.covariates) or 'none'}")

BACKBONES = {TABULAR_MODELS[name].label: name for name in SAVABLE}
c1, c2, c3, c4, c5 = st.columns(5)
backbone = BACKBONES[c1.selectbox("Model", list(BACKBONES))]
holdout = c5.slider("Controls held out for the calibration check", 0.0, 0.5, 0.2, 0.05,
                    help="These controls are not used for fitting; the Calibration page checks the model on them.")
epochs = c2.number_input("Max epochs (0 = automatic)", 0, 100000, 0)
samples = c3.number_input("Samples per point (M)", 100, 20000, 1000, step=100)
seed = c4.number_input("Seed", 0, 10**6, 0)
with st.expander("Advanced"):
    a1, a2, a3, a4 = st.columns(4)
    transform = a1.selectbox("IDP transform", ["quantile", "yeo-johnson", "standard"])
    steps = a2.number_input("Sampling steps", 5, 500, 25)
    width = a3.number_input("Network width", 8, 1024, 128 if backbone == "film-mlp" else 64)
    device = a4.selectbox("Device", ["auto", "cpu", "cuda"])
    TAILS = {"heavy-tailed measures (default; e.g. FreeSurfer IDPs)": "gaussianised",
             "light-tailed measures (normal-like in their units)": "residual"}
    tail_scale = TAILS[st.selectbox(
        "Extreme z-scores (beyond the samples' outer 1%) for", list(TAILS),
        help="Where the diffusion models extrapolate z beyond their samples: on the scale they sample on, which "
             "keeps the training data's tail weight (default), or on the IDPs' own standardised scale, which "
             "assumes tails that are normal in the measures' own units and scores more healthy values of "
             "heavy-tailed measures as extreme (README, Scores).")]
    batch = st.multiselect(
        "Batch covariates: a shift, scale and age curve per level, no network input", m.covariates, default=[],
        disabled=backbone not in DIFFUSION,
        help="Covariates such as site or scanner modelled as ComBat-style batch effects: each level shifts and "
             "scales every IDP, with its own age curve where leave-one-out error says it helps, and the network's "
             "residual shape is shared by all levels. Scoring then shares samples across them (several times "
             "faster with many sites), and a new site is adapted by its shift and scale alone. Recommended for "
             "sites and scanners that differ by shift, scale and age trend; a site that changes the shape of the "
             "distribution is better left a network input (README, Site adaptation).")


def fit_model(backbone: str, params: dict, training, mapping, label: str, progress):
    """Runs on the job thread: it gets everything it needs as arguments (no session state there)."""
    model = make_model(backbone, **params)
    return model.fit(training, age=mapping.age, covariates=mapping.covariates, idps=mapping.idps,
                     progress=progress, label=label)


job: Job | None = ss.get("job")
running = job is not None and job.running
if st.button("Start fitting", type="primary", disabled=running or not m.idps):
    _, held = held_out_split(controls, m.covariates, holdout, np.random.default_rng(int(seed)), at_least_one=False)
    ss.fit_heldout = list(controls.index[held])  # a level is never held out whole: the model must know it
    training = controls.drop(index=ss.fit_heldout)
    ss.fit_data_key = data_key()
    params = dict(epochs=int(epochs) or None, n_samples=int(samples), seed=int(seed), transform=transform,
                  sampling_steps=int(steps), device=device, tail_scale=tail_scale, batch_covariates=list(batch),
                  backbone_params={"width": int(width)} if backbone == "film-mlp" else
                  {"dim": int(width)} if backbone == "saint" else {})
    ss.job = Job(fit_model, backbone, params, training, m, ss.data_name, name="fit").start()
    ss.job_label = f"{backbone} on {ss.data_name}"
    st.rerun()


def job_panel():  # polls (a fragment rerun every second) only while the fit runs; its end reruns the page
    job = st.session_state.get("job")
    if job is None:
        return
    snap = job.snapshot()
    last = snap["last"] or {}
    text = f"{st.session_state.job_label}: {snap['status']}"
    if last.get("train_loss") is not None:
        text += f" · step {last['done']}/{last['total']} · loss {last['train_loss']:.4f}"
    elif last.get("stage") and last.get("stage") != "train":
        text += f" · {last['stage']} {last['done']}/{last['total']}"
    st.progress(snap["fraction"], text=text)
    events = [e for e in snap["events"] if e.get("val_loss") is not None]
    history = getattr(job.result, "history_", None) if snap["status"] == "done" else None
    if history and history.get("val_loss"):  # the finished fit: what early stopping kept
        st.plotly_chart(loss_curve(history), width="stretch", key="loss_fitted")
    elif events:
        st.plotly_chart(loss_curve({"step": [e["done"] for e in events],
                                    "train_loss": [e["train_loss"] for e in events],
                                    "val_loss": [e["val_loss"] for e in events]}),
                        width="stretch", key=f"loss_{len(events)}")
    if snap["status"] == "done":
        for note in fit_notes(job.result):  # the sentences `fit` prints: denoiser kept, calibration, tails, warnings
            st.caption(note)
    if snap["status"] == "running":
        st.session_state.fit_watched = job
        if st.button("Cancel", key="cancel_fit"):
            job.cancel()
        return
    if st.session_state.get("fit_watched") is job:  # it just ended: rerun the page so "Start fitting" is enabled
        st.session_state.fit_watched = None
        if snap["status"] != "done":
            st.rerun()
    if snap["status"] == "done" and st.session_state.get("model") is not job.result:
        use_model(job.result, f"fitted: {st.session_state.job_label}")
        autosave_model(job.result, f"fitted: {st.session_state.job_label}")
        if st.session_state.get("fit_data_key") == data_key():
            if st.session_state.fit_heldout:
                set_heldout(st.session_state.fit_heldout)
            else:
                st.session_state.fitted_on = (model_key(), data_key())
        st.rerun()
    elif snap["status"] == "failed":
        st.error(snap["error"])
    elif snap["status"] == "cancelled":
        st.warning("Fitting was cancelled; the previous model stays active.")


st.fragment(run_every=1.0 if running else None)(job_panel)()

st.divider()
st.subheader("Save, load and share models")
st.caption("Models you save or upload are private to this browser session (its link keeps them after a reload). "
           "Publish one to make it visible to every session on this server.")
model = ss.get("model")
lib = library()
s1, s2 = st.columns(2)
with s1:
    name = st.text_input("Save the active model as", "my-model")
    replace = st.checkbox("Replace a saved model of this name", value=False)
    if st.button("Save", disabled=model is None):
        try:
            lib.save(model, name, replace=replace)
            st.success(f"Saved as {name!r} in this session.")
        except InputError as exc:
            show_error(exc)
    mine = [label.split(": ", 1)[1] for label in lib.saved() if label.startswith("mine: ")]
    if mine:
        to_publish = st.selectbox("Publish a saved model to the shared library", mine)
        replace_shared = st.checkbox("Replace a shared model of this name", value=False)
        if st.button("Publish"):
            try:
                lib.publish(to_publish, replace=replace_shared)
                st.success(f"{to_publish!r} is now in the shared library, visible to every session.")
            except InputError as exc:
                show_error(exc)
    if model is not None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                model.save(Path(tmp) / "model")
                archive = model_dir_to_zip(Path(tmp) / "model")
            st.download_button("Download the active model (.zip: safetensors + JSON)", archive,
                               file_name=f"normdiff-{datetime.now():%Y%m%d-%H%M}.zip", mime="application/zip")
        except InputError as exc:
            st.caption(str(exc))
with s2:
    saved = {**available_demo_models(), **lib.saved()}
    choice = st.selectbox("Load a model", list(saved))
    if st.button("Load") and choice:
        try:
            use_saved_model(saved[choice], choice)
            st.success(f"Loaded {choice}")
        except InputError as exc:
            show_error(exc)
    up = st.file_uploader("Upload a model (.zip with model.safetensors and model.json)", type=["zip"])
    if up is not None and ss.get("model_upload_id") != up.file_id:
        ss.model_upload_id = up.file_id  # a refused archive is not retried on every rerun
        try:
            target = lib.import_zip(up.getvalue(), f"upload-{up.file_id[:8]}")
            use_model(load_model(target, kind="tabular"), f"uploaded: {up.name}")
            st.success(f"Loaded {up.name} (kept in this session as {target.name!r})")
        except InputError as exc:
            show_error(exc)
