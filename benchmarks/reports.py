"""Time to make a subject report (HTML and PDF) on this machine.

    .venv/bin/python benchmarks/reports.py [--threads 2]

For the shipped fcon1000 reference (208 IDPs; needs ../shared/data) and the demo FiLM-MLP and SHASH models
(10 IDPs): score one subject, build the report content (expected ranges and the centile-curve panels, which
sample the model), render HTML and PDF (figures drawn once for both); and a cohort report of 200 demo subjects
(controls and patients; scoring and report timed apart); the MRI report of the demo lesion scan (scan scored
first). A subject report is content + one format as the CLI
makes it (`report_pdf_s`, `report_html_s`) or both as the dashboard does (`report_both_s`); scoring comes
before (the report reads a score table). Prints seconds per stage (one run each, after the model is loaded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.registry import load_model  # noqa: E402
from normcore.reports import cohort_report, render, render_cohort, subject_report, to_html, to_pdf_bytes  # noqa: E402
from normcore.tabular.io import read_table  # noqa: E402

FCON = ROOT.parent / "shared" / "data" / "tabular" / "fcon1000.csv"


def time_report(model, table, subject: str, id_col: str) -> dict:
    """Seconds to score the subject, then to make its report as the CLI does (content + one format) and as the
    dashboard does (content + both formats, figures drawn once)."""
    out = {}
    start = time.perf_counter()
    scores = model.score(table[table[id_col].astype(str) == subject])
    out["score_s"] = time.perf_counter() - start
    start = time.perf_counter()
    report = subject_report(model, scores, subject, id_col=id_col)
    out["content_s"] = time.perf_counter() - start
    for name, make in (("html", to_html), ("pdf", to_pdf_bytes), ("html_and_pdf", render)):
        start = time.perf_counter()
        make(report)
        out[f"{name}_s"] = time.perf_counter() - start
    out["report_pdf_s"] = out["content_s"] + out["pdf_s"]
    out["report_html_s"] = out["content_s"] + out["html_s"]
    out["report_both_s"] = out["content_s"] + out["html_and_pdf_s"]
    return {k: round(v, 2) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    from dashboard.demo import demo_cohort

    demo = demo_cohort()
    for name in ("demo-shash-baseline", "demo-film-mlp"):
        results[name] = time_report(load_model(ROOT / "models" / name), demo, str(demo.sub_id.iloc[0]), "sub_id")
    cohort = demo.sample(200, random_state=0)  # controls and patients of the demo cohort
    for name in ("demo-shash-baseline", "demo-film-mlp"):
        model = load_model(ROOT / "models" / name)
        start = time.perf_counter()
        scores = model.score(cohort)
        score_s = time.perf_counter() - start
        start = time.perf_counter()
        render_cohort(cohort_report(model, scores, "group", "control", id_col="sub_id"))
        results[f"{name} cohort of 200"] = {"score_s": round(score_s, 2),
                                            "report_s": round(time.perf_counter() - start, 2)}
    mri_dir, scans = ROOT / "models" / "mri-ixi-cpu", ROOT / "models" / "mri-demo-scans"
    if (mri_dir / "model.json").is_file() and (scans / "lesion.nii.gz").is_file():
        from normcore.imaging.pipeline import score_scan
        from normcore.reports.mri import findings_from_result
        from normcore.reports.subject import mri_subject_report

        mri = load_model(mri_dir, kind="imaging")
        start = time.perf_counter()
        result = score_scan(mri, scans / "lesion.nii.gz", 46.71, "M", mask=scans / "brain.nii.gz", register=False,
                            seed=0)
        score_s = time.perf_counter() - start
        start = time.perf_counter()
        render(mri_subject_report(findings_from_result(result), result.age, result.sex, mri_dir.name,
                                  mri.card_["training"]["n_train"], mri.age_range_))
        results["mri-ixi-cpu scan report (demo lesion scan)"] = {
            "score_s": round(score_s, 2), "report_both_s": round(time.perf_counter() - start, 2)}
    if FCON.is_file():
        table = read_table(FCON)
        results["fcon1000-film-mlp"] = time_report(load_model(ROOT / "models" / "fcon1000-film-mlp"), table,
                                                   str(table.sub_id.iloc[0]), "sub_id")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
