"""Streamlit glue shared by the pages: session state, cached model loading, background jobs, errors.

Science stays in ``normcore``; this module only keeps per-session state (one user's uploads never
reach another session) and bounded caches. Cached models are shared by every session and are never
modified: what a session knows about its model (name, cache token) lives in its own session state.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.demo import LIBRARY_ROOT, available_demo_models, demo_cohort, demo_truth
from dashboard.library import SessionLibrary, new_session_key, remove_stale_sessions, valid_key
from normcore import InputError
from normcore._utils.errors import column_hint
from normcore._utils.progress import as_progress
from normcore.jobs import Job
from normcore.registry import load_model
from normcore.tabular.evaluation import evaluate

__all__ = ["Mapping", "active_model", "age_grid_for", "autosave_model", "cached_model", "calibration_checks",
           "categorical_choices", "clear_scores", "data_key", "finished_scores", "fitted_in_sample", "heldout_rows",
           "init_state", "level_label", "model_columns_present", "model_for_table", "model_key", "require_model",
           "score_job", "scores_or_progress", "set_data", "set_heldout", "show_error", "use_model", "use_saved_model",
           "library", "remember_table", "restore_last_work"]


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


def _card_stamp(path: str | Path) -> int:
    card = Path(path) / "model.json"
    return card.stat().st_mtime_ns if card.is_file() else 0


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_shared(path: str, stamp: int):
    """One loaded model per folder version and process (read-only: never modified after loading)."""
    return load_model(path)


def cached_model(path: str | Path):
    """The model saved at ``path``; a folder saved again since is loaded afresh."""
    return _load_shared(str(path), _card_stamp(path))


def use_model(model, name: str, token: str | None = None) -> None:
    """Make ``model`` the session's active model; ``token`` names it for caches (default: unique to this call)."""
    ss = st.session_state
    ss.model, ss.model_name, ss.model_token = model, name, token or uuid.uuid4().hex
    clear_scores()


def use_saved_model(path: str | Path, name: str) -> None:
    """Make the model saved at ``path`` active (shared cached copy; its token is the folder's version)."""
    use_model(cached_model(path), name, token=f"{Path(path).resolve()}@{_card_stamp(path)}")


@st.cache_resource(show_spinner=False)
def _stale_sessions_removed() -> list[str]:
    """Once per server process: forget session folders untouched for weeks."""
    return remove_stale_sessions(LIBRARY_ROOT)


def library() -> SessionLibrary:
    """This session's private model folder and the shared library."""
    return SessionLibrary(LIBRARY_ROOT, st.session_state.session_key)


def _init_session_key() -> None:
    """The session's key: the one in the URL (a reloaded page finds its work again), else a new one."""
    ss = st.session_state
    if "session_key" in ss:
        if st.query_params.get("session") != ss.session_key:  # page switches may drop it from the URL
            st.query_params["session"] = ss.session_key
        return
    _stale_sessions_removed()
    asked = st.query_params.get("session")
    ss.session_key = asked if valid_key(asked) else new_session_key()
    ss.restore_offer = library().restorable() if asked == ss.session_key else {}
    st.query_params["session"] = ss.session_key
    library().touch()


def autosave_model(model, label: str) -> None:
    """Keep the session's latest fitted or adapted model on disk (restored after a reload)."""
    try:
        library().autosave(model, label)
    except (InputError, OSError) as exc:
        st.warning(f"The model could not be kept for a reload ({exc}); save it on the Fit page.")


def remember_table(frame: pd.DataFrame, name: str, mapping: Mapping) -> None:
    """Keep the session's uploaded table and mapping on disk (restored after a reload)."""
    try:
        library().save_table(frame, name, mapping.__dict__)
    except (InputError, OSError) as exc:
        st.warning(f"The table could not be kept for a reload ({exc}).")


def restore_last_work() -> None:
    """Make the session's autosaved table and model active again (after a reload)."""
    ss = st.session_state
    offer = ss.get("restore_offer") or {}
    lib = library()
    if "table_name" in offer:
        set_data(lib.restored_table(), offer["table_name"])
        known = {k: v for k, v in offer.get("mapping", {}).items() if k in Mapping.__dataclass_fields__}
        ss.mapping = Mapping(**known)
    if "model_label" in offer:
        use_model(load_model(lib.autosaved_model, kind="tabular"), offer["model_label"])
    ss.restore_offer = {}
    clear_scores()


def starting_demo_model(demos: dict[str, Path]) -> tuple[str, Path]:
    """The demo model a fresh session starts on: the one ``NORMDIFF_DEMO_MODEL`` names (its label or folder name,
    e.g. ``demo-shash-baseline`` on a slow machine), else the first shipped one."""
    wanted = os.environ.get("NORMDIFF_DEMO_MODEL", "").strip()
    for label, path in demos.items():
        if wanted and wanted in (label, path.name):
            return label, path
    return next(iter(demos.items()))


def init_state() -> None:
    """Give a fresh session its key, the demo data and the demo model."""
    ss = st.session_state
    _init_session_key()
    if "data" not in ss:
        truth = demo_truth()
        set_data(demo_cohort(), "demo: synthetic cohort (D=10)")
        ss.mapping = Mapping(age="age", covariates=["sex"], idps=truth.idp_names, id_col="sub_id",
                             group_col="group", control_value="control")
    if "model" not in ss:
        demos = available_demo_models()
        if demos:
            label, path = starting_demo_model(demos)
            use_saved_model(path, label)
        else:
            ss.model, ss.model_name, ss.model_token = None, None, None
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
    problem = model_columns_present(model, df) or table_errors(model, df, st.session_state.mapping)
    if problem:
        st.error(problem)
        st.stop()
    return model, df, st.session_state.mapping


def table_errors(model, df: pd.DataFrame, mapping: Mapping) -> str | None:
    """Why the active table cannot be scored by ``model`` (the validation report's errors), else None."""
    key = (model_key(), *data_key(), mapping.id_col)
    cache = st.session_state.setdefault("table_errors", {})
    if key not in cache:
        from normcore.tabular.validation import validate_table

        idps = [c for c in model.idps_ if c in df.columns]
        report = validate_table(df, model.age_, model.covariates_, idps,
                                id_col=mapping.id_col if mapping.id_col in df.columns else None)
        errors = [f.message for f in report.errors]
        cache.clear()
        cache[key] = ("This table cannot be scored until it is fixed (see the Data page): " + "; ".join(errors[:3])
                      + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")) if errors else None
    return cache[key]


def model_key() -> str:
    """A key naming the active model for caches: its display name plus the session's token for it, so two
    fits with the same name (in one session or in two sessions sharing a cache) never share cached results."""
    return f"{st.session_state.get('model_name')}:{st.session_state.get('model_token')}"


def set_data(frame: pd.DataFrame, name: str) -> None:
    """Make ``frame`` the active table; cached results keyed by :func:`data_key` are invalidated."""
    st.session_state.data, st.session_state.data_name = frame, name
    st.session_state.data_version = st.session_state.get("data_version", 0) + 1


def set_heldout(rows: list) -> None:
    """Rows of the active table that the active model never saw (held out of its fit or adaptation)."""
    st.session_state.heldout = {"model": model_key(), "data": data_key(), "rows": list(rows)}


def heldout_rows() -> list | None:
    """The held-out rows recorded for the active model and table, else None."""
    rec = st.session_state.get("heldout")
    if rec and rec["model"] == model_key() and rec["data"] == data_key():
        return rec["rows"]
    return None


def fitted_in_sample() -> bool:
    """True when the active model was fitted in this session on the active table's controls without holdout."""
    return st.session_state.get("fitted_on") == (model_key(), data_key())


def data_key() -> tuple:
    return st.session_state.get("data_name"), st.session_state.get("data_version", 0)


def _score_key(model, df: pd.DataFrame, n_samples: int) -> tuple:
    if model is not active_model():
        raise ValueError("scoring jobs are kept for the active model only")
    return (model_key(), *data_key(), len(df), n_samples)


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


def calibration_checks(model, df: pd.DataFrame, group_col: str | None, control_value: str | None, n_samples: int,
                       progress=None) -> tuple[dict, pd.DataFrame]:
    """The Calibration page's background work: ``evaluate``'s report of ``df`` and the scores it was computed from
    (scored once, seed 0, as the CLI's ``evaluate``), for the page's PIT histograms."""
    progress = as_progress(progress)
    scores = model.score(df, n_samples=n_samples, seed=0, progress=progress.as_stage("scoring"))
    return evaluate(model, df, group_col=group_col, control_value=control_value, n_samples=n_samples,
                    progress=progress, scores=scores), scores


def finished_scores(model, df: pd.DataFrame, n_samples: int = 1000) -> pd.DataFrame | None:
    """Scores of a finished :func:`score_job` for this model and table, else None (never starts work)."""
    job = st.session_state.setdefault("score_jobs", {}).get(_score_key(model, df, n_samples))
    return job.result if job is not None and job.status == "done" else None


def clear_scores() -> None:
    """Cancel and forget every scoring job of this session (a new model or table replaces them)."""
    for job in st.session_state.setdefault("score_jobs", {}).values():
        job.cancel()
    st.session_state.score_jobs = {}


def scores_or_progress(model, df: pd.DataFrame, n_samples: int = 1000) -> pd.DataFrame | None:
    """Scores of the active table once its :func:`score_job` is done; None while it runs (a progress bar with a
    Cancel button polls it in a fragment, which reruns the page when the job ends) and after a cancel (until the
    user asks to score again). InputError if scoring failed."""
    key = _score_key(model, df, n_samples)
    job = st.session_state.setdefault("score_jobs", {}).get(key)
    if job is not None and job.status == "cancelled":
        st.warning("Scoring was cancelled.")
        if not st.button("Score again", type="primary", key="score_again"):
            return None
    job = score_job(model, df, n_samples)
    if job.running:
        _scoring_progress(job, len(df))
        return None
    if job.status != "done":
        raise InputError(job.error or f"scoring was {job.status}")
    return job.result


@st.fragment(run_every=1.0)
def _scoring_progress(job: Job, n_rows: int) -> None:
    snap = job.snapshot()
    if snap["status"] != "running":
        st.rerun()
    st.progress(snap["fraction"], text=f"Scoring {n_rows} subjects against the model (in the background: the other "
                                       "pages stay usable)")
    if st.button("Cancel scoring", key="score_cancel"):
        job.cancel()


def model_columns_present(model, df: pd.DataFrame) -> str | None:
    """A message when the active table lacks columns the model needs, else None."""
    need = model.required_columns_
    missing = [c for c in need if c not in df.columns]
    if missing:
        return ("The active table lacks column(s) the model needs: "
                + ", ".join(f"{c}{column_hint(c, df.columns)}" for c in missing[:6]))
    return None


def show_error(exc: Exception) -> None:
    """User-facing error without a traceback."""
    if isinstance(exc, InputError):
        st.error(str(exc))
    else:
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}")


def level_label(model, covariate: str, level: str) -> str:
    """A level as users read it: with the meaning the model card gives it (e.g. sex 0 -> "0 (female)")."""
    coding = (getattr(model, "info_", {}) or {}).get("data", {}).get(f"{covariate}_coding", {})
    return f"{level} ({coding[level]})" if level in coding else str(level)


def categorical_choices(model) -> dict[str, list[str]]:
    return model.levels_


def age_grid_for(model, step: float = 1.0) -> np.ndarray:
    lo, hi = model.age_range_
    return np.arange(np.floor(lo), np.ceil(hi) + 1e-9, step)


# ---------------------------------------------------------------------------------------------- MRI page
MRI_FINISHED = ("done", "cancelled", "failed")  # scans finished before a cancel or a crash are kept


@st.cache_resource(max_entries=2, show_spinner="Loading the imaging model…")
def imaging_model(path: str, stamp: int = 0):
    """One loaded imaging model per folder version and process (read-only at inference)."""
    return load_model(path, device="auto", kind="imaging")


@st.cache_resource(max_entries=2, show_spinner="Loading the diffusion autoencoder…")
def latent_model(path: str, stamp: int = 0):
    """One loaded diffusion autoencoder per folder version and process (read-only at inference)."""
    return load_model(path, device="auto", kind="diffae")


def init_mri_state() -> None:
    ss = st.session_state
    ss.setdefault("mri_latent", {})
    ss.setdefault("mri_results", {})
    ss.setdefault("mri_lesions", {})
    ss.setdefault("mri_errors", {})
    ss.setdefault("mri_views", {})


def native_view_of(name: str):
    """The scored scan ``name`` at its own resolution (made once per result, kept in the session)."""
    from normcore.imaging.native_view import view_of_result

    ss = st.session_state
    result = ss.mri_results[name]
    cached = ss.mri_views.get(name)
    if cached is None or cached[0] is not result:  # a rerun of the same name replaces the result
        cached = (result, view_of_result(result))
        ss.mri_views[name] = cached
    return cached[1]


def start_mri_job(model, items: list[dict], method: str) -> Job:
    """Score ``items`` in a background job; results land in the session when it finishes (see collect)."""
    from normcore.imaging.pipeline import score_many  # imaging is loaded by the MRI page only

    ss = st.session_state
    ss.mri_sink = {"results": {}, "lesions": {}, "errors": {}}
    ss.mri_job = Job(score_many, model, items, method, ss.mri_sink, name="mri").start()
    return ss.mri_job


def collect_mri_job() -> bool:
    """Move a finished (or cancelled) job's results into the session, once; True when something moved."""
    ss = st.session_state
    job = ss.get("mri_job")
    if job is None or job.status not in MRI_FINISHED or ss.get("mri_collected") is job:
        return False
    sink = ss.mri_sink
    ss.mri_results.update(sink["results"])
    ss.mri_lesions.update(sink["lesions"])
    ss.mri_errors = dict(sink["errors"])
    if sink["results"]:
        ss.mri_scan = next(reversed(sink["results"]))
    ss.mri_collected = job
    return True


def start_latent_job(model, name: str) -> Job:
    """Whole-brain deviation and counterfactuals (every 5 years of the training range) of the scored scan ``name``,
    from its preprocessed volume, in a background job (see collect_latent_job)."""
    from normcore.imaging.latent_pipeline import analyse_prepared

    ss = st.session_state
    result = ss.mri_results[name]
    ss.mri_latent_job = Job(analyse_prepared, model, result.as_input(), model.counterfactual_age_grid(), "both",
                            name="mri-latent").start()
    ss.mri_latent_job_for = (name, result)
    return ss.mri_latent_job


def collect_latent_job() -> bool:
    """Keep a finished whole-brain analysis under its scan (for the result it was made from), once."""
    ss = st.session_state
    job = ss.get("mri_latent_job")
    if job is None or job.status != "done" or ss.get("mri_latent_collected") is job:
        return False
    name, scored = ss.mri_latent_job_for
    ss.mri_latent[name] = (scored, job.result)
    ss.mri_latent_collected = job
    return True


def latent_result_of(name: str):
    """The whole-brain analysis of the scan ``name`` as it is now shown (None if not made, or made for an earlier
    result of the same name)."""
    ss = st.session_state
    kept = ss.get("mri_latent", {}).get(name)
    result = ss.mri_results.get(name)
    return kept[1] if kept is not None and result is not None and kept[0] is result else None


def clear_mri_results() -> None:
    st.session_state.mri_results, st.session_state.mri_lesions, st.session_state.mri_errors = {}, {}, {}
    st.session_state.mri_views = {}
    st.session_state.mri_latent = {}
