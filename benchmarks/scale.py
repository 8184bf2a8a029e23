"""How cost and calibration grow with the number of IDPs D and subjects N (issue: scale and extremes, item 2).

Runs ``benchmarks/fit_score.py --suite`` once per (model, D, N) on the synthetic truth, each in its own process (so
its peak memory is its own): fit on N controls, score ``--holdout`` fresh controls with M samples, and measure
against the exact truth (ACE of the centile curves, mean |centile error|, median |z error|), coverage of the central
95%, PIT-KS pass share, the dependence gap beside its sampling-noise floor, the memorisation ratio, fit and score
seconds, steps, covariate points scored, peak memory. Rows go to ``--results`` (default
``benchmarks/results/scale.jsonl``); then a cost model is fitted and printed and a figure of the same name (.png) is
drawn:

    fit seconds   ~ steps x (f0 + f1 D + f2 D W)            (per optimiser step, batch 256; plus the calibration)
    score seconds ~ points x M x S x (c0 + c1 D + c2 D W)   (per row and sampler step; S = 25)

with W FiLM-MLP's per-IDP path width (recorded per row; the D x W terms are fitted only where W varies).

    .venv/bin/python benchmarks/scale.py [--models film-mlp,shash-baseline] [--d 2,10,50,100,200]
        [--n 1000,5000,20000] [--holdout 1000] [--samples 1000] [--threads 2] [--results FILE] [--plot-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scale.jsonl"
STEPS = 25


def run_grid(models: list[str], ds: list[int], ns: list[int], holdout: int, samples: int, threads: int,
             results: Path = RESULTS) -> None:
    for model in models:
        for d in ds:
            for n in ns:
                cmd = [sys.executable, str(HERE / "fit_score.py"), "--data", "synthetic", "--d", str(d),
                       "--n-train", str(n), "--holdout", str(holdout), "--samples", str(samples),
                       "--threads", str(threads), "--set", f"backbone={model}", "--suite", "--out", str(results)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                print(proc.stdout.strip() or f"{model} D={d} N={n} failed: {proc.stderr[-500:]}", flush=True)


def cost_model(rows: list[dict]) -> dict:
    """Least-squares fits of the per-step fit cost and the per-row-step score cost as linear in D and, where the rows
    record FiLM-MLP's per-IDP path width W and it varies, in D x W (the path's elementwise work grows with both).
    The fit's multivariate calibration (``mv_calibration_s``, a scoring of the validation rows) is not a training
    step and is left out of the per-step cost."""
    out = {}
    diff = [r for r in rows if r.get("stop_step") and r.get("score_points")]
    widths = [r.get("marginal_width") for r in diff]
    with_width = all(w is not None for w in widths) and len(set(widths)) > 1
    if len(diff) >= (3 if with_width else 2):
        d = np.array([r["idps"] for r in diff], float)
        per_step = np.array([(r["fit_s"] - (r.get("mv_calibration_s") or 0.0)) / r["stop_step"] for r in diff])
        per_row_step = np.array([r["score_s"] / (r["score_points"] * r["samples"] * STEPS) for r in diff])
        columns = [np.ones_like(d), d] + ([d * np.array(widths, float)] if with_width else [])
        design = np.column_stack(columns)
        f = np.linalg.lstsq(design, per_step, rcond=None)[0]
        c = np.linalg.lstsq(design, per_row_step, rcond=None)[0]
        out = {"fit_s_per_step": {"f0_ms": round(float(f[0]) * 1e3, 3), "f1_ms_per_idp": round(float(f[1]) * 1e3, 4)},
               "score_s_per_row_step": {"c0_us": round(float(c[0]) * 1e6, 3),
                                        "c1_us_per_idp": round(float(c[1]) * 1e6, 4)}}
        if with_width:
            out["fit_s_per_step"]["f2_ms_per_idp_width"] = round(float(f[2]) * 1e3, 5)
            out["score_s_per_row_step"]["c2_us_per_idp_width"] = round(float(c[2]) * 1e6, 5)
        out["rows"] = len(diff)
        out["fit_rel_rms"] = round(float(np.sqrt(np.mean((design @ f / per_step - 1) ** 2))), 3)
        out["score_rel_rms"] = round(float(np.sqrt(np.mean((design @ c / per_row_step - 1) ** 2))), 3)
    return out


def markdown_table(rows: list[dict]) -> str:
    """The rows as the table BENCHMARKS.md shows, sorted by model, D and N."""
    head = ("| model | D | N | fit s (steps) | score s (points) | peak MB | coverage95 | PIT-KS pass | "
            "median \\|z err\\| | mean \\|centile err\\| | ACE vs truth | dependence gap / noise floor / PoM | "
            "NN ratio |")
    lines = [head, "|" + "---|" * 13]
    key = lambda r: (r["params"].get("backbone", "film-mlp"), r["idps"], r["n_train"])  # noqa: E731
    for r in sorted(rows, key=key):
        steps = f" ({r['stop_step']})" if r.get("stop_step") else ""
        points = f" ({r['score_points']})" if r.get("score_points") else ""
        lines.append(f"| {key(r)[0]} | {r['idps']} | {r['n_train']} | {r['fit_s']}{steps} | {r['score_s']}{points} | "
                     f"{r['peak_rss_mb']} | {r['coverage95']} | {r['pit_ks_pass']} | {r['median_abs_z_error']} | "
                     f"{r['mean_abs_centile_error']} | {r.get('ace_truth', '')} | {dependence(r)} | "
                     f"{r.get('nn_ratio', '')} |")
    return "\n".join(lines)


def dependence(row: dict) -> str:
    """"gap / floor / PoM" of a row run with the suite, else empty."""
    keys = ("dependence_gap", "dependence_noise_floor", "dependence_gap_pom")
    return " / ".join(str(row[k]) for k in keys) if all(k in row for k in keys) else ""


def plot(rows: list[dict], path: Path) -> None:
    """Calibration against N, fit and score time against D and, for rows run with the suite, the dependence gap over
    its noise floor against D; one line style per model, one colour per D (or N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suite = all("dependence_gap" in r for r in rows)
    fig, axes = plt.subplots(1, 4 if suite else 3, figsize=(17 if suite else 13, 3.8))
    models = sorted({r["params"].get("backbone", "film-mlp") for r in rows})
    styles = dict(zip(models, ("-", "--", ":", "-."), strict=False))
    colour = {v: f"C{i}" for i, v in enumerate(sorted({r["idps"] for r in rows} | {r["n_train"] for r in rows}))}
    for model in models:
        mine = [r for r in rows if r["params"].get("backbone", "film-mlp") == model]
        line = {"marker": "o", "ls": styles[model]}
        for d in sorted({r["idps"] for r in mine}):
            sel = sorted((r for r in mine if r["idps"] == d), key=lambda r: r["n_train"])
            n = [r["n_train"] for r in sel]
            axes[0].plot(n, [r.get("ace_truth", r["mean_abs_centile_error"]) for r in sel], color=colour[d],
                         label=f"{model} D={d}", **line)
        for key, ax in (("fit_s", axes[1]), ("score_s", axes[2])):
            for n in sorted({r["n_train"] for r in mine}):
                sel = sorted((r for r in mine if r["n_train"] == n), key=lambda r: r["idps"])
                ax.plot([r["idps"] for r in sel], [r[key] for r in sel], color=colour[n], label=f"{model} N={n}",
                        **line)
        if suite:
            for n in sorted({r["n_train"] for r in mine}):
                sel = sorted((r for r in mine if r["n_train"] == n), key=lambda r: r["idps"])
                axes[3].plot([r["idps"] for r in sel], [r["dependence_gap"] / r["dependence_noise_floor"] for r in sel],
                             color=colour[n], label=f"{model} N={n}", **line)
    axes[0].set(xscale="log", xlabel="training subjects N",
                ylabel="ACE vs truth" if all("ace_truth" in r for r in rows) else "mean |centile error| vs truth",
                title="calibration against the exact truth")
    axes[1].set(xlabel="IDPs D", ylabel="seconds", title="fit time")
    axes[2].set(xlabel="IDPs D", ylabel="seconds", title="score time (held-out controls)")
    if suite:
        axes[3].axhline(1.0, color="k", lw=0.8)
        axes[3].set(xlabel="IDPs D", ylabel="gap / noise floor", title="dependence gap over its noise floor")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="film-mlp,shash-baseline")
    ap.add_argument("--d", default="2,10,50,100,200")
    ap.add_argument("--n", default="1000,5000,20000")
    ap.add_argument("--holdout", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(RESULTS), help="JSON-lines file the rows are appended to and read from")
    ap.add_argument("--plot-only", action="store_true", help="only refit the cost model and redraw the figure")
    args = ap.parse_args()
    if not args.plot_only:
        run_grid(args.models.split(","), [int(v) for v in args.d.split(",")], [int(v) for v in args.n.split(",")],
                 args.holdout, args.samples, args.threads, Path(args.results))
    results = Path(args.results)
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    print(markdown_table(rows))
    print(json.dumps(cost_model([r for r in rows if r["params"].get("backbone", "film-mlp") == "film-mlp"])))
    plot(rows, results.with_suffix(".png"))


if __name__ == "__main__":
    main()
