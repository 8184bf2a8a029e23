"""Render benchmark JSON results (engine.py, compare.py) as the Markdown tables of BENCHMARKS.md.

    .venv/bin/python benchmarks/report.py benchmarks/results/engine.json benchmarks/results/compare.json
"""

from __future__ import annotations

import json
import sys


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def engine_table(res: dict) -> str:
    lines = [f"Machine: {res['machine']}, torch {res['torch']}, measured float32 matmul "
             f"{res['matmul_gflop_per_s']} GFLOP/s.", "",
             "| backbone | fit s | steps (best) | ACE vs truth | coverage 95% | PIT KS pass (α=0.01) | "
             "score 1000×1000 s | rows·steps/s | network GFLOP/s (share of matmul) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['backbone']} | {r['fit_s']} | {r['train_steps']} ({r['best_step']}) | {r['ace']:.4f} | "
                     f"{r['coverage95_mean']:.3f} | {r['pit_ks_pass_0.01']}/{len(r['pit_ks_p'])} | "
                     f"{r['score_1000x1000_s']} | {r['rows_steps_per_s']:,} | {r['network_gflop_per_s']} "
                     f"({r['fraction_of_matmul_peak']:.1%}) |")
        lines.append(f"| | ACE per IDP: {', '.join(f'{a:.3f}' for a in r['ace_per_idp'])} | | | | "
                     f"KS p: {', '.join(f'{p:.3f}' for p in r['pit_ks_p'])} | | | |")
    return "\n".join(lines)


COLS = [("model", "model"), ("fit_s", "fit s"), ("score_s", "score s"), ("M", "M"), ("ace_truth", "ACE truth"),
        ("ace_heldout", "ACE held-out"), ("coverage50", "cov 50"), ("coverage90", "cov 90"),
        ("coverage95", "cov 95"), ("pit_ks_pass_0.01", "PIT-KS pass"), ("msll", "MSLL"), ("expv", "EXPV"),
        ("dep_model", "dep. gap"), ("dep_product_of_marginals", "dep. gap PoM"), ("dep_oracle", "dep. noise floor"),
        ("mem_ratio", "NN ratio"),
        ("mem_share_closer_train", "closer to train"), ("auc_mean_abs_z", "AUC mean|z|"),
        ("auc_multivariate", "AUC multivar.")]


def compare_table(res: dict) -> str:
    lines = [f"Machine: {res['machine']}, torch {res['torch']}; whole run {res['total_s']} s.", ""]
    datasets = []
    for r in res["rows"]:
        if r["dataset"] not in datasets:
            datasets.append(r["dataset"])
    for ds in datasets:
        rows = [r for r in res["rows"] if r["dataset"] == ds]
        cols = [(k, h) for k, h in COLS if any(k in r for r in rows)]
        lines += [f"**{ds}**", "", "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            if "skipped" in r:
                lines.append(f"| {r['model']} | skipped: {r['skipped']} |" + " |" * (len(cols) - 2))
                continue
            lines.append("| " + " | ".join(fmt(r.get(k), 4 if k.startswith(("ace", "dep")) else 3)
                                           for k, _ in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        res = json.loads(open(path).read())
        print(engine_table(res) if "runs" in res else compare_table(res))
        print()


if __name__ == "__main__":
    main()
