"""A fit on an idle machine and beside competing CPU jobs (issue: scale, item 5: busy-machine behaviour).

Runs ``python -m normcore fit`` (as a user does: default threads) on a synthetic table, first alone, then
while ``--jobs`` other processes each keep one core busy (a Python busy loop), and reports wall-clock seconds
and the busy/idle ratio. ``--roots`` runs the same for other checkouts (e.g. a worktree of an earlier commit:
"before"); a fit running longer than ``--timeout`` seconds is stopped and reported as ">timeout".

    .venv/bin/python benchmarks/busy_machine.py [--roots .,/tmp/before] [--jobs 2] [--n 3000] [--d 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fit_seconds(root: Path, data: Path, out: Path, timeout: float) -> float | None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(root)
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "normcore", "fit", str(data), "--age", "age", "--covariates", "sex",
                        "--idps-regex", "^idp_", "--out", str(out), "--quiet"], cwd=root, env=env, check=True,
                       capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--roots", default=".", help="checkouts to compare, comma-separated")
    ap.add_argument("--jobs", type=int, default=2, help="competing single-core jobs")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="busy-"))
    data = work / "data.csv"
    subprocess.run([sys.executable, "-m", "normcore", "synth", "--n", str(args.n), "--d", str(args.d), "--out",
                    str(data)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    for i, root in enumerate(args.roots.split(",")):
        root_path = (ROOT / root).resolve() if not Path(root).is_absolute() else Path(root)
        idle = fit_seconds(root_path, data, work / f"idle{i}", args.timeout)
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.jobs)]
        try:
            time.sleep(1.0)  # let the competing jobs start before the fit reads the load
            busy = fit_seconds(root_path, data, work / f"busy{i}", args.timeout)
        finally:
            for h in hogs:
                h.kill()
        row = {"root": root, "cores": os.cpu_count(), "competing_jobs": args.jobs, "n": args.n, "d": args.d,
               "idle_s": round(idle, 1) if idle else f">{args.timeout:.0f}",
               "busy_s": round(busy, 1) if busy else f">{args.timeout:.0f}",
               "ratio": round(busy / idle, 2) if busy and idle else None}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
