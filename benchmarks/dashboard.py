"""Dashboard timings in a real browser (Debian chromium + playwright), demo model, this CPU.

    .venv/bin/python benchmarks/dashboard.py

Measures: process start of `make run` (set-up already done) to the first centile chart drawn in the
browser; page switches (to Data, and back to Centile curves with its chart drawn); an IDP change on the
centile page (from pressing Enter in the IDP box to the new chart). Switches and IDP changes are
repeated and reported as the median.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen(["make", "run"], cwd=ROOT, env={**os.environ, "STREAMLIT_SERVER_PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            out["browser_ready_s"] = round(time.perf_counter() - start, 2)
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except Exception:
                    time.sleep(0.1)
            out["page_loaded_s"] = round(time.perf_counter() - start, 2)
            page.get_by_role("heading", name="NormDiff", exact=False).first.wait_for(timeout=120000)
            out["title_drawn_s"] = round(time.perf_counter() - start, 2)
            page.locator(".js-plotly-plot").first.wait_for(timeout=120000)
            out["start_to_first_chart_s"] = round(time.perf_counter() - start, 2)
            chart = page.locator(".stMain .js-plotly-plot").first
            to_data, to_centiles, idp_change = [], [], []
            for rep in range(3):
                page.get_by_role("link", name="Centile curves").click()
                page.get_by_role("heading", name="Centile curves", exact=True).wait_for(timeout=120000)
                chart.wait_for(timeout=120000)
                t = time.perf_counter()
                page.get_by_role("link", name="Data").click()
                page.get_by_text("Column mapping").wait_for()
                to_data.append(time.perf_counter() - t)
                t = time.perf_counter()
                page.get_by_role("link", name="Centile curves").click()
                page.get_by_role("heading", name="Centile curves", exact=True).wait_for(timeout=120000)
                chart.wait_for(timeout=120000)
                to_centiles.append(time.perf_counter() - t)
                name = f"idp_0{rep + 2}"
                page.get_by_label("IDP (type to search)").click()
                page.keyboard.type(name)
                t = time.perf_counter()
                page.keyboard.press("Enter")
                page.locator(".stMain .gtitle", has_text=name).first.wait_for(timeout=120000)
                idp_change.append(time.perf_counter() - t)
            out["page_switch_to_data_s"] = round(statistics.median(to_data), 2)
            out["page_switch_to_centiles_s"] = round(statistics.median(to_centiles), 2)
            out["idp_change_s"] = round(statistics.median(idp_change), 2)
            out["idp_change_all_s"] = [round(v, 2) for v in idp_change]
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
