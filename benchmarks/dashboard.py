"""Dashboard timings in a real browser (Debian chromium + playwright), demo model, this CPU.

    .venv/bin/python benchmarks/dashboard.py

Measures: process start of `streamlit run app.py` to the first centile chart drawn; a page switch
(Start -> Deviations -> Centile curves, chart visible); an IDP change on the centile page.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1"], cwd=ROOT, env={**os.environ},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except Exception:
                    time.sleep(0.1)
            page.locator(".js-plotly-plot").first.wait_for(timeout=120000)
            out["start_to_first_chart_s"] = round(time.perf_counter() - start, 2)
            page.get_by_role("link", name="Centile curves").click()
            page.locator(".js-plotly-plot").first.wait_for(timeout=120000)
            time.sleep(1.0)
            t = time.perf_counter()
            page.get_by_role("link", name="Data").click()
            page.get_by_text("Column mapping").wait_for()
            out["page_switch_to_data_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            page.get_by_role("link", name="Centile curves").click()
            page.locator(".js-plotly-plot").first.wait_for(timeout=120000)
            out["page_switch_to_cached_centiles_s"] = round(time.perf_counter() - t, 2)
            box = page.get_by_label("IDP (type to search)")
            t = time.perf_counter()
            box.click()
            page.keyboard.type("idp_02")
            page.keyboard.press("Enter")
            page.get_by_text("idp_02: centiles", exact=False).or_(page.locator(".gtitle", has_text="idp_02")) \
                .first.wait_for(timeout=120000)
            out["idp_change_s"] = round(time.perf_counter() - t, 2)
            browser.close()
    finally:
        proc.terminate()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
