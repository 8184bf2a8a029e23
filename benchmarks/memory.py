"""Peak memory of the command line on large inputs (bounded-memory checks of the reliability work).

    .venv/bin/python benchmarks/memory.py [--rows 1000000] [--repo PATH]

Writes a synthetic table (``--rows`` subjects, the demo cohort's 10 IDPs; 900,000 rows is just under the
200 MB table limit) once, then runs ``python -m normcore score`` with the shipped demo SHASH baseline (exact
centiles: memory is the table handling, not sampling), with the demo FiLM-MLP on a 2,000-row slice (M=1000)
and, when ../shared/data is present, the fcon1000 reference on the 1078 fcon1000 subjects (208 IDPs), each
in a fresh process; reports wall time and peak resident memory (ru_maxrss of the child). ``--repo`` runs the
same commands from another checkout (e.g. an older commit's worktree) for a before/after comparison.
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


def run(repo: Path, args: list[str]) -> dict:
    """Run one command in a child process; its own peak resident memory from wait4's resource usage."""
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "normcore", *args, "--threads", "1", "--quiet"], cwd=repo,
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip()[-300:]
    return {"exit": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
            "peak_mib": round(usage.ru_maxrss / 1024), "stderr": tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=900_000)
    ap.add_argument("--repo", default=str(ROOT))
    args = ap.parse_args()
    repo = Path(args.repo).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="normdiff-memory-"))
    # the tables are written by a child process: a child's peak memory (ru_maxrss) counts the parent image it
    # was forked from, so the parent must stay small
    subprocess.run([sys.executable, "-c", GENERATE, str(ROOT), str(tmp), str(args.rows)], check=True)
    size = (tmp / "big.csv").stat().st_size / 2**20
    results = {"rows": args.rows, "csv_mib": round(size), "repo": str(repo),
               "shash": run(repo, ["score", str(ROOT / "models/demo-shash-baseline"), str(tmp / "big.csv"),
                                   "--out", str(tmp / "s1.csv")]),
               "film_mlp_2k": run(repo, ["score", str(ROOT / "models/demo-film-mlp"), str(tmp / "mid.csv"),
                                         "--samples", "1000", "--out", str(tmp / "s2.csv")])}
    fcon = ROOT.parent / "shared" / "data" / "tabular" / "fcon1000.csv"
    if fcon.is_file():
        results["fcon1000_reference"] = run(repo, ["score", str(ROOT / "models/fcon1000-film-mlp"), str(fcon),
                                                   "--out", str(tmp / "s3.csv")])
    print(json.dumps(results, indent=1))


GENERATE = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from normcore.tabular.synthetic import SyntheticTruth
root, tmp, rows = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
table = SyntheticTruth.load(root / "models" / "demo-cohort.truth.json").sample(rows, seed=9)
table.to_csv(tmp / "big.csv", index=False)
table.head(2000).to_csv(tmp / "mid.csv", index=False)
"""


if __name__ == "__main__":
    main()
