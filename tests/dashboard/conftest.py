"""Every dashboard test keeps its sessions' and shared models in a temporary library, never in models/."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def temporary_library(tmp_path, monkeypatch):
    import dashboard.state

    root = tmp_path / "library"
    monkeypatch.setattr(dashboard.state, "LIBRARY_ROOT", root)
    monkeypatch.setenv("NORMDIFF_LIBRARY", str(root))  # for a server started by a test
    return root


def with_fast_model(at):
    """The session's active model becomes the demo SHASH baseline: for tests of a page rather than of the diffusion
    model, whose scoring of the 660-subject demo cohort takes about a minute on one CI thread."""
    from dashboard.demo import available_demo_models
    from normcore.registry import load_model

    at.session_state["model"] = load_model(available_demo_models()["SHASH baseline (demo)"])
    at.session_state["model_name"], at.session_state["model_token"] = "SHASH baseline (demo)", "shash-test"
    return at


def work_until_cancelled(stage: str):
    """A stand-in for a page's background work: it reports progress under ``stage`` until the user cancels it
    (whatever arguments the page passes)."""
    import threading

    def work(*args, progress=None, **kwargs):
        while True:
            progress.update(stage, 1, 4)
            threading.Event().wait(0.02)

    return work
