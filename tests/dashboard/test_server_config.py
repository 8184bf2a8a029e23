"""The dashboard server's settings (.streamlit/config.toml), which `make run` and the browser tests both use."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def server_config() -> dict:
    with open(ROOT / ".streamlit" / "config.toml", "rb") as fh:
        return tomllib.load(fh)


def test_the_server_stays_on_this_machine_and_sends_nothing():
    config = server_config()
    assert config["server"]["address"] == "127.0.0.1"
    assert config["browser"]["gatherUsageStats"] is False
    assert config["server"]["enableXsrfProtection"] is True
    assert config["client"]["showErrorDetails"] == "none"  # users see messages, never server tracebacks


def test_no_full_garbage_collection_after_every_script_run():
    """Streamlit's default collects all generations after every run, each fragment poll included; that starved a
    report job of the GIL (5-35 s for a 2.4 s report, BENCHMARKS.md)."""
    assert server_config()["runner"]["postScriptGC"] is False
