"""Sampler throughput of the tabular denoisers as a share of the machine's matmul peak (issue: scale).

For each backbone (default parameters) and number of IDPs D, times the default sampler (SDE-DPM-Solver++(2M),
25 steps) drawing ``m`` samples at ``points`` covariate points, the shape scoring uses, and counts the
network's floating-point operations per call with torch's FLOP counter (matrix products and attention).
The float32 matmul throughput of the same machine is measured in the same run. Untrained networks with their
output layers re-initialised: the cost does not depend on the weights. ``--autocast bf16`` runs the network under
bfloat16 autocast (a GPU measurement: normcore samples in float32) and gives its share of the bf16 matmul peak,
also measured in the same run.

    .venv/bin/python benchmarks/throughput.py [--backbones film-mlp,saint] [--d 10,50,213] [--threads 2]
        [--autocast bf16] [--points 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import machine_record, matmul_gflops  # noqa: E402  (benchmarks/engine.py: the matmul peak, measured alike)

from normcore.diffusion import NoiseSchedule  # noqa: E402
from normcore.diffusion import sample as run_sampler  # noqa: E402
from normcore.diffusion.parameterisation import wrap_denoiser  # noqa: E402
from normcore.nets import build_backbone  # noqa: E402
from normcore.tabular.diffusion_model import LOG_SNR_START, SDE_ETA  # noqa: E402

STEPS = 25
D_COND = 3


def measure(backbone: str, d: int, points: int, m: int, device: torch.device,
            autocast: torch.dtype | None = None) -> dict:
    torch.manual_seed(0)
    net = build_backbone(backbone, d, D_COND)
    for p in net.parameters():
        if p.dim() and not p.abs().sum():
            torch.nn.init.normal_(p, std=0.02)  # zero-initialised output layers: keep the work realistic
    schedule = NoiseSchedule("cosine", 1000)
    denoiser = wrap_denoiser(net, schedule, "gaussian-residual").to(device).eval()

    def eps_fn(x, t, cond):
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            return denoiser(x, t, cond).float()

    cond = torch.randn(points, D_COND, device=device)
    x = torch.randn(points, m, d, device=device)
    t = torch.full((points,), 500, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        eps_fn(x, t, cond)
    flops_per_call = counter.get_total_flops()
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        run_sampler(eps_fn, schedule, cond, (points, min(m, 64), d), "dpm++2m-sde", 2, SDE_ETA, gen, 10.0,
                    log_snr_start=LOG_SNR_START)  # warm-up
        start = time.perf_counter()
        run_sampler(eps_fn, schedule, cond, (points, m, d), "dpm++2m-sde", STEPS, SDE_ETA, gen, 10.0,
                    log_snr_start=LOG_SNR_START)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    rows = points * m
    return {"backbone": backbone, "d": d, "autocast": str(autocast).replace("torch.", "") if autocast else None,
            "rows": rows, "steps": STEPS, "seconds": round(seconds, 2),
            "us_per_row_step": round(seconds / (rows * STEPS) * 1e6, 2),
            "mflop_per_row": round(flops_per_call / rows / 1e6, 3),
            "gflop_per_s": round(flops_per_call * STEPS / seconds / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", default="film-mlp,saint")
    ap.add_argument("--d", default="10,50,213")
    ap.add_argument("--points", type=int, default=4, help="covariate points per sampler call")
    ap.add_argument("--samples", type=int, default=1000, help="samples per point (M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--autocast", choices=("bf16",), default=None,
                    help="run the network under bfloat16 autocast; shares are then of the bf16 matmul peak")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device, peak, results = machine_record(args.threads)
    autocast = torch.bfloat16 if args.autocast else None
    if autocast is not None:
        peak = matmul_gflops(device, dtype=autocast)
        results["bf16_matmul_gflop_per_s"] = round(peak, 1)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}), flush=True)
    for backbone in args.backbones.split(","):
        for d in map(int, args.d.split(",")):
            r = measure(backbone, d, args.points, args.samples, device, autocast)
            r["fraction_of_matmul_peak"] = round(r["gflop_per_s"] / peak, 3)
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
