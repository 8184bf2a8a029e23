"""Headless test of the landing page."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def test_landing_page_renders_the_true_centile_chart():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    names = [trace.get("name") for trace in spec["data"]]
    assert "median" in names and "subjects" in names
    at.slider[0].set_value(3).run()
    assert not at.exception
    assert "idp_04" in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]


@pytest.mark.parametrize("key", ["gatherUsageStats = false", "headless = true"])
def test_streamlit_config_keeps_data_local(key):
    assert key in (ROOT / ".streamlit" / "config.toml").read_text()
