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
