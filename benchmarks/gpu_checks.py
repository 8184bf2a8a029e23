"""The scale issue's GPU checks in one prepared run, sized for a short device lease (issue: scale and extremes).

A session lent a GPU has minutes of it, so everything the issue asks of one runs from this one command, in an order
that puts the cheapest and most decisive checks first. Each stage writes one JSON row to ``OUT/gpu_checks.jsonl`` and
prints it; a stage that would start with less than its reserve of the time budget left is recorded as skipped, and
the two long stages run as child processes killed at the budget's end, so the run always returns its rows.

Stages:

``machine``
    the GPU, torch, and the float32 (no TF32: torch's default) and bf16 matmul throughput, measured here.
``same-model``
    the CUDA path's correctness: a FiLM-MLP fitted on the CPU (synthetic truth, D = 10, 2000 controls), saved, loaded
    on the CPU and on the GPU and scored on 1000 fresh controls with the same seed. The GPU draws its own noise, so
    the z-scores agree within Monte-Carlo error, not exactly: the row gives the mean and largest |z difference| and
    each device's median |z error| against the exact truth and coverage of the central 95%. The same data are then
    fitted on the GPU (training under bf16 autocast), and that model's error against the truth is given beside the CPU
    fit's.
``throughput``
    ``benchmarks/throughput.py`` on the GPU for FiLM-MLP and SAINT at D = 10, 50, 213, in float32 and under bf16
    autocast, with their shares of the matching matmul peak (``throughput_fp32.json``, ``throughput_bf16.json``).
``calibration``
    the paper's claim that the transformer stays better calibrated than the MLP at high D:
    ``benchmarks/fit_score.py --suite`` on the synthetic truth at D = 200 (``--d``), N = 5000 (``--n-train``), FiLM-MLP
    then SAINT (``calibration.jsonl``: curve ACE against the truth, coverage, PIT pass, dependence gap, fit and score
    seconds). A model that does not finish inside the budget is recorded as such, which is itself the measurement.

    python3 benchmarks/gpu_checks.py --out DIR [--budget-s 480] [--stages machine,same-model,throughput,calibration]

On the device machine (its image has torch, numpy, scipy, pandas, scikit-learn and safetensors, all the tabular
code imports): ``PYTHONUNBUFFERED=1 python3 benchmarks/gpu_checks.py --out $OUT``, with a ``timeout_s`` above the
budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from engine import matmul_gflops  # noqa: E402
from fit_score import truth_errors  # noqa: E402

STAGES = ("machine", "same-model", "throughput", "calibration")
RESERVE_S = {"machine": 10, "same-model": 60, "throughput": 60, "calibration": 60}  # least time left to start


class Run:
    """The checks' clock, their output folder and their rows."""

    def __init__(self, out: Path, budget_s: float, threads: int):
        self.out, self.budget_s, self.threads = out, budget_s, threads
        self.start = time.perf_counter()
        self.rows = out / "gpu_checks.jsonl"

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def record(self, row: dict) -> None:
        row = {**row, "elapsed_s": round(time.perf_counter() - self.start, 1)}
        with self.rows.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def child(self, cmd: list[str], reserve_s: float) -> dict:
        """Run ``cmd`` until it ends or the budget (less ``reserve_s``) does; its exit and seconds."""
        limit = max(1.0, self.left() - reserve_s)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
            status = {"returncode": proc.returncode, "stderr_tail": proc.stderr[-600:] if proc.returncode else ""}
        except subprocess.TimeoutExpired:
            status = {"returncode": None, "stderr_tail": f"stopped at the budget's end after {limit:.0f} s"}
        return {**status, "seconds": round(time.perf_counter() - start, 1)}


def machine(device: torch.device) -> dict:
    props = torch.cuda.get_device_properties(device)
    return {"gpu": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count, "torch": torch.__version__,
            "fp32_matmul_gflop_per_s": round(matmul_gflops(device, n=4096), 1),
            "bf16_matmul_gflop_per_s": round(matmul_gflops(device, n=8192, dtype=torch.bfloat16), 1)}


def _errors(scores, holdout, truth) -> dict:
    """The scores' errors against the exact truth (:func:`fit_score.truth_errors`) and their mean coverage of the
    central 95%."""
    centile = scores[[f"centile:{c}" for c in truth.idp_names]].to_numpy()
    return {**truth_errors(scores, holdout, truth.idp_names, truth),
            "coverage95": round(float(np.mean((centile > 0.025) & (centile < 0.975))), 4)}


def same_model(device: torch.device) -> dict:
    from normcore import make_synthetic
    from normcore.registry import load_model, make_model

    train, truth = make_synthetic(2000, d=10, seed=3)
    holdout = truth.sample(1000, seed=4)
    fit = {"age": "age", "covariates": ["sex"], "idps": truth.idp_names}
    row = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = make_model("film-mlp", seed=0, device="cpu").fit(train, **fit)
        row["cpu_fit_s"] = round(time.perf_counter() - start, 1)
        model.save(Path(tmp) / "m")
        scores = {}
        for where in ("cpu", str(device)):
            loaded = load_model(Path(tmp) / "m", device=where)
            start = time.perf_counter()
            scores[where] = loaded.score(holdout, seed=0)
            row[f"score_s_{where}"] = round(time.perf_counter() - start, 2)
            row[f"{where}_scored"] = _errors(scores[where], holdout, truth)
        z = [scores[w][[f"z:{c}" for c in truth.idp_names]].to_numpy() for w in ("cpu", str(device))]
        diff = np.abs(z[0] - z[1])
        row.update(mean_abs_z_diff=round(float(np.nanmean(diff)), 4), max_abs_z_diff=round(float(np.nanmax(diff)), 4))
        start = time.perf_counter()
        on_gpu = make_model("film-mlp", seed=0, device=str(device)).fit(train, **fit)
        row["gpu_fit_s"] = round(time.perf_counter() - start, 1)
        row["gpu_fitted_scored_on_gpu"] = _errors(on_gpu.score(holdout, seed=0), holdout, truth)
        row["kept_step_cpu_gpu"] = [model.history_.get("kept_step"), on_gpu.history_.get("kept_step")]
    return row


def throughput(run: Run) -> dict:
    row = {}
    for name, extra in (("fp32", []), ("bf16", ["--autocast", "bf16"])):
        out = run.out / f"throughput_{name}.json"
        cmd = [sys.executable, str(HERE / "throughput.py"), "--backbones", "film-mlp,saint", "--d", "10,50,213",
               "--points", "32", "--threads", str(run.threads), "--out", str(out), *extra]
        status = run.child(cmd, RESERVE_S["calibration"])
        shares = {}
        if out.exists():
            for r in json.loads(out.read_text())["runs"]:
                shares[f"{r['backbone']} D={r['d']}"] = [r["us_per_row_step"], r["fraction_of_matmul_peak"]]
        row[name] = {**status, "us_per_row_step_and_share_of_peak": shares}
    return row


def calibration(run: Run, d: int, n_train: int) -> dict:
    out, row = run.out / "calibration.jsonl", {}
    for backbone in ("film-mlp", "saint"):
        cmd = [sys.executable, str(HERE / "fit_score.py"), "--data", "synthetic", "--d", str(d), "--n-train",
               str(n_train), "--holdout", "1000", "--seed", "0", "--suite", "--threads", str(run.threads),
               "--set", f"backbone={backbone}", "--out", str(out)]
        row[backbone] = run.child(cmd, 5)
        if run.left() < RESERVE_S["calibration"]:
            break
    if out.exists():
        keys = ("fit_s", "stop_step", "kept_step", "score_s", "coverage95", "pit_ks_pass", "median_abs_z_error",
                "ace_truth", "dependence_gap", "dependence_noise_floor", "nn_ratio")
        for line in out.read_text().splitlines():
            r = json.loads(line)
            name = r["params"].get("backbone", "film-mlp")
            row[name] = {**row.get(name, {}), **{k: r.get(k) for k in keys}}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the rows (created)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="seconds the whole run may take")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--threads", type=int, default=8, help="CPU threads (the CPU fit and the children)")
    ap.add_argument("--d", type=int, default=200, help="IDPs of the calibration stage's synthetic truth")
    ap.add_argument("--n-train", type=int, default=5000, help="training controls of the calibration stage")
    args = ap.parse_args()
    stages = args.stages.split(",")
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: these checks need a GPU (the CPU's numbers come from the other benchmarks)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run, device = Run(out, args.budget_s, args.threads), torch.device("cuda")
    work = {"machine": lambda: machine(device), "same-model": lambda: same_model(device),
            "throughput": lambda: throughput(run), "calibration": lambda: calibration(run, args.d, args.n_train)}
    for stage in (s for s in STAGES if s in stages):
        if run.left() < RESERVE_S[stage]:
            run.record({"stage": stage, "skipped": f"{run.left():.0f} s left, under its reserve {RESERVE_S[stage]} s"})
            continue
        start = time.perf_counter()
        try:
            row = work[stage]()
        except Exception as exc:  # a failed stage is a finding; the later stages still run
            row = {"error": f"{type(exc).__name__}: {exc}"[:800]}
        run.record({"stage": stage, "seconds": round(time.perf_counter() - start, 1), **row})


if __name__ == "__main__":
    main()
