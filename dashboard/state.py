"""Streamlit glue shared by the pages: session state, cached model loading, error display.

Science stays in ``normcore``; this module only keeps per-session state (one user's uploads never
reach another session) and bounded caches.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.demo import available_demo_models, demo_cohort, demo_truth
from normcore._utils.errors import InputError
from normcore.jobs import Job
from normcore.registry import load_model

USER_MODELS = Path(__file__).resolve().parent / "models" / "user"


@dataclass
class Mapping:
    """How the active table's columns are used."""

    age: str = "age"
    covariates: list[str] = field(default_factory=list)
    idps: list[str] = field(default_factory=list)
    id_col: str | None = None
    group_col: str | None = None
    control_value: str | None = None

    def controls(self, df: pd.DataFrame) -> pd.DataFrame:
        if self.group_col and self.group_col in df:
            return df[df[self.group_col].astype(str) == str(self.control_value)]
        return df


@st.cache_resource(max_entries=8, show_spinner=False)
def cached_model(path: str):
    """Load a saved model once per process (models are read-only data)."""
    return load_model(path)


def init_state() -> None:
    """Put the demo data and demo model in a fresh session."""
    ss = st.session_state
    if "data" not in ss:
        truth = demo_truth()
        set_data(demo_cohort(), "demo: synthetic cohort (D=10)")
        ss.mapping = Mapping(age="age", covariates=["sex"], idps=truth.idp_names, id_col="sub_id",
                             group_col="group", control_value="control")
    if "model" not in ss:
        demos = available_demo_models()
        if demos:
            label, path = next(iter(demos.items()))
            ss.model, ss.model_name = cached_model(str(path)), label
        else:
            ss.model, ss.model_name = None, None
    ss.setdefault("score_jobs", {})
    ss.setdefault("job", None)


def active_model():
    return st.session_state.get("model")


def require_model() -> bool:
    if active_model() is None:
        st.info("No model is active: fit one on the Fit page or load a saved one.")
        return False
    return True


def model_for_table():
    """(model, table, mapping) for pages that need both; otherwise says what is missing and stops the page."""
    model = active_model()
    if model is None:
        st.info("No model is active: fit one on the Fit page or load a saved one.")
        st.stop()
    df = st.session_state.data
    problem = model_columns_present(model, df)
    if problem:
        st.error(problem)
        st.stop()
    return model, df, st.session_state.mapping


def model_key(model=None) -> str:
    """A key naming one model object: its display name plus a token unique to the object, so two fits
    with the same name (in one session or in two sessions sharing a cache) never share cached results."""
    model = st.session_state.get("model") if model is None else model
    token = getattr(model, "_ui_token", None)
    if token is None and model is not None:
        token = uuid.uuid4().hex
        model._ui_token = token
    return f"{st.session_state.get('model_name')}:{token}"


def set_data(frame: pd.DataFrame, name: str) -> None:
    """Make ``frame`` the active table; cached results keyed by :func:`data_key` are invalidated."""
    st.session_state.data, st.session_state.data_name = frame, name
    st.session_state.data_version = st.session_state.get("data_version", 0) + 1


def data_key() -> tuple:
    return st.session_state.get("data_name"), st.session_state.get("data_version", 0)


def _score_key(model, df: pd.DataFrame, n_samples: int) -> tuple:
    return (model_key(model), *data_key(), len(df), n_samples)


def score_job(model, df: pd.DataFrame, n_samples: int = 1000) -> Job:
    """A background job scoring the active table under the active model, one per (model, data, M).

    Jobs live in the session (bounded to 4) and keep running when the user switches pages, so scoring
    is never restarted by navigation; a failed or cancelled job is replaced on the next call.
    """
    key = _score_key(model, df, n_samples)
    jobs = st.session_state.setdefault("score_jobs", {})
    job = jobs.get(key)
    if job is None or job.status == "cancelled":
        if len(jobs) >= 4:
            old = jobs.pop(next(iter(jobs)))
            old.cancel()
        job = jobs[key] = Job(_score_table, model, df, n_samples, name="score").start()
    return job


def _score_table(model, df: pd.DataFrame, n_samples: int, progress=None) -> pd.DataFrame:
    return model.score(df, n_samples=n_samples, progress=progress)


def finished_scores(model, df: pd.DataFrame, n_samples: int = 1000) -> pd.DataFrame | None:
    """Scores of a finished :func:`score_job` for this model and table, else None (never starts work)."""
    job = st.session_state.setdefault("score_jobs", {}).get(_score_key(model, df, n_samples))
    return job.result if job is not None and job.status == "done" else None


def clear_scores() -> None:
    """Cancel and forget every scoring job of this session (a new model or table replaces them)."""
    for job in st.session_state.setdefault("score_jobs", {}).values():
        job.cancel()
    st.session_state.score_jobs = {}


def scores_for(model, df: pd.DataFrame, n_samples: int = 1000) -> pd.DataFrame:
    """Scores of the active table (waits for :func:`score_job` with a spinner); InputError if scoring failed."""
    job = score_job(model, df, n_samples)
    if job.running:
        with st.spinner(f"Scoring {len(df)} subjects against the model…"):
            job.wait()
    if job.status != "done":
        raise InputError(job.error or f"scoring was {job.status}")
    return job.result


def model_columns_present(model, df: pd.DataFrame) -> str | None:
    """A message when the active table lacks columns the model needs, else None."""
    need = [model.encoder_.age, *model.encoder_.categorical, *model.idps]
    missing = [c for c in need if c not in df.columns]
    if missing:
        return f"The active table lacks column(s) the model needs: {', '.join(missing[:6])}"
    return None


def show_error(exc: Exception) -> None:
    """User-facing error without a traceback."""
    if isinstance(exc, InputError):
        st.error(str(exc))
    else:
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}")


def categorical_choices(model) -> dict[str, list[str]]:
    return {c: model.encoder_.levels[c] for c in model.encoder_.categorical}


def age_grid_for(model, step: float = 1.0) -> np.ndarray:
    lo, hi = model.encoder_.age_min, model.encoder_.age_max
    return np.arange(np.floor(lo), np.ceil(hi) + 1e-9, step)
