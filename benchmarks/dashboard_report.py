"""Seconds from "Make a report" to its download buttons on the Deviations page, in a real browser (Debian chromium +
playwright), over fresh sessions of one server; the SHASH demo model on the demo cohort. Each configuration given
(extra ``streamlit run`` flags; none = the project's .streamlit/config.toml) gets its own server, run one after the
other in one invocation, so their numbers sit side by side:

    .venv/bin/python benchmarks/dashboard_report.py --runs 12 --config "" --config "--runner.postScriptGC true"

A report that has not appeared after ``--give-up-s`` counts as a failure (the browser test waits 120 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server did not open port {port} in {timeout_s:.0f} s")


def one_configuration(flags: list[str], runs: int, give_up_s: float) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as library:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "NORMDIFF_LIBRARY": library,
               "NORMDIFF_DEMO_MODEL": "demo-shash-baseline"}
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                 "--server.headless", "true", *flags], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds, failures, page_errors = [], 0, 0
        try:
            wait_for_port(port)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                for _ in range(runs):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                    page.goto(f"http://127.0.0.1:{port}/deviations")
                    report = page.get_by_role("button", name=re.compile("^Make a report of"))
                    report.wait_for(timeout=120000)
                    # the page drawn (running indicator gone) before the click, as the browser test does: a click
                    # into a page being drawn can blank it (a Streamlit frontend error, counted apart below)
                    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')",
                                           timeout=120000)
                    report.click()
                    start = time.perf_counter()
                    try:
                        page.get_by_role("button", name="Download the report (PDF)").wait_for(
                            timeout=give_up_s * 1000)
                        seconds.append(time.perf_counter() - start)
                    except PlaywrightTimeout:
                        page_errors += bool(errors)  # the frontend failed (a blank page), not a slow report
                        failures += not errors
                    page.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return {"flags": " ".join(flags) or "(config.toml)", "runs": runs, "failures_over_give_up": failures,
            "blank_pages": page_errors,
            "median_s": round(statistics.median(seconds), 2) if seconds else None,
            "max_s": round(max(seconds), 2) if seconds else None, "seconds": [round(s, 2) for s in seconds]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--give-up-s", type=float, default=40.0)
    parser.add_argument("--config", action="append", default=None,
                        help='extra `streamlit run` flags, quoted; repeat for several (default: one, "")')
    args = parser.parse_args()
    for config in args.config or [""]:
        print(json.dumps(one_configuration(shlex.split(config), args.runs, args.give_up_s)), flush=True)


if __name__ == "__main__":
    main()
