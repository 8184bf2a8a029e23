"""fcon1000 leave-one-site-out: adapting a reference to a new site from K of its controls, against the
alternatives, on the held-out rest of that site.

    .venv/bin/python benchmarks/site_adaptation.py [--threads 2] [--ks 5,10,20,40] [--out FILE]

For every site with at least 40 subjects: the reference is fitted on all other sites (sex and site as
covariates; IDPs: every usable IDP, QC columns left out). For K controls drawn from the left-out site
(one draw per K, fixed seed) and the rest of that site as the test set:
  no adaptation   the reference with the site marginalised (a random training site),
  adapted         reference.adapt(K controls) (FiLM-MLP and the SHASH baseline),
  refit           the same model type fitted from scratch on the other sites plus the K controls,
  PCNtoolkit BLR  BLR fitted with the K controls in its training data (its documented route), on a fixed
                  subset of IDPs (every 10th) because its fit takes minutes for all IDPs on this CPU.
  adapted_embedding  the same adaptation, but the network is conditioned on an input fitted to the K
                  controls (``network_input="embedding"``) instead of the mixture over training sites
                  (``--network-inputs marginal,embedding``; diffusion models only).
Reported per method: coverage of the central 95% interval, PIT-KS pass rate (alpha 0.01) over IDPs, and the
time to adapt or fit. Results: benchmarks/results/site_adaptation.json and a plot of coverage against K.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normcore.metrics import pit_ks  # noqa: E402
from normcore.registry import DIFFUSION, make_model  # noqa: E402
from normcore.tabular import read_table, resolve_idps, validate_table  # noqa: E402
from normcore.tabular.baselines.pcntoolkit_blr import PCNToolkitBLR, pcntoolkit_available  # noqa: E402
from normcore.tabular.validation import is_qc_column  # noqa: E402

FCON = ROOT.parent / "shared" / "data" / "tabular" / "fcon1000.csv"
MIN_SITE = 40
SCORE_SAMPLES = 300  # samples per subject: enough for coverage and PIT at these test sizes


def fcon() -> tuple[pd.DataFrame, list[str]]:
    df = read_table(FCON)
    idps = [c for c in resolve_idps(df, exclude=["age", "sex", "site", "sub_id"]) if not is_qc_column(c)]
    report = validate_table(df, "age", ["sex", "site"], idps, id_col="sub_id")
    return df, [c for c in idps if c not in report.constant_idps]


def calibration(model, test: pd.DataFrame, idps: list[str]) -> dict:
    scores = model.score(test, n_samples=SCORE_SAMPLES, seed=0)
    z = scores[[f"z:{c}" for c in idps]].to_numpy()
    u = scores[[f"centile:{c}" for c in idps]].to_numpy()
    pit = np.array([pit_ks(u[:, j])[1] for j in range(len(idps))])
    return {"coverage95": float((np.abs(z) < 1.959964).mean()), "pit_pass": float((pit >= 0.01).mean())}


def fit(name: str, train: pd.DataFrame, idps: list[str], seed: int, batch: list[str] = ()):
    """``name`` fitted on ``train``; the diffusion backbones take ``batch`` as their batch covariates."""
    params = {"batch_covariates": list(batch)} if batch and name in DIFFUSION else {}
    model = PCNToolkitBLR(seed=seed) if name == "pcntoolkit-blr" else make_model(name, seed=seed, **params)
    start = time.perf_counter()
    model.fit(train, age="age", covariates=["sex", "site"], idps=idps)
    return model, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ks", default="5,10,20,40")
    ap.add_argument("--models", default="film-mlp,shash-baseline,pcntoolkit-blr")
    ap.add_argument("--sites", default=None, help="comma-separated subset of the left-out sites")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--network-inputs", default="marginal",
                    help="adapted network inputs to compare for diffusion models: marginal and/or embedding")
    ap.add_argument("--no-refit", action="store_true", help="leave out the refits (adaptation variants only)")
    ap.add_argument("--batch-covariates", default="",
                    help="diffusion models: covariates modelled as batch effects (e.g. site; README, Site adaptation)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "site_adaptation.json"))
    ap.add_argument("--summary", nargs="+", default=None, metavar="RESULTS_JSON",
                    help="print the table of saved results (averaged over sites) instead of running")
    args = ap.parse_args()
    if args.summary:
        rows = [r for path in args.summary for r in json.loads(Path(path).read_text())["rows"]]
        print(summary(rows))
        plot(rows, Path(args.summary[0]).with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)
    if not FCON.is_file():
        sys.exit(f"{FCON} is absent (it lives in ../shared/data)")
    df, idps = fcon()
    pcn_idps = idps[::10]
    ks = [int(k) for k in args.ks.split(",")]
    models = [m for m in args.models.split(",") if m != "pcntoolkit-blr" or pcntoolkit_available()]
    batch = [c for c in args.batch_covariates.split(",") if c]
    label = {m: m + (f" (batch: {','.join(batch)})" if batch and m in DIFFUSION else "") for m in models}
    counts = df.site.value_counts()
    sites = [s for s in counts.index if counts[s] >= MIN_SITE]
    if args.sites:
        sites = [s for s in sites if s in args.sites.split(",")]
    rows = []
    out = Path(args.out)
    for site in sites:
        others, local = df[df.site != site], df[df.site == site].sample(frac=1.0, random_state=args.seed)
        for name in models:
            use = pcn_idps if name == "pcntoolkit-blr" else idps
            reference, ref_s = (None, 0.0) if name == "pcntoolkit-blr" else fit(name, others, use, args.seed, batch)
            for k in ks:
                controls, test = local.iloc[:k], local.iloc[k:]
                row = {"site": site, "n_site": int(len(local)), "k": k, "model": label[name], "n_idps": len(use),
                       "n_test": int(len(test))}
                if reference is not None:
                    reference.allow_unseen = True
                    row["none"] = calibration(reference, test, use)
                    start = time.perf_counter()
                    adapted = reference.adapt(controls)
                    row["adapt_s"] = time.perf_counter() - start
                    row["adapted"] = calibration(adapted, test, use)
                    if "embedding" in args.network_inputs.split(",") and adapted._has_network_input():
                        start = time.perf_counter()
                        embedded = reference.adapt(controls, network_input="embedding")
                        row["adapt_embedding_s"] = time.perf_counter() - start
                        row["adapted_embedding"] = calibration(embedded, test, use)
                        row["embedding"] = embedded.adaptation_[-1]["levels"][0]
                    reference.allow_unseen = False
                    row["reference_fit_s"] = ref_s
                if not args.no_refit:
                    refit, refit_s = fit(name, pd.concat([others, controls]), use, args.seed, batch)
                    row["refit"] = calibration(refit, test, use)
                    row["refit_s"] = refit_s
                if reference is not None:  # the diffusion/SHASH numbers on PCNtoolkit's IDP subset
                    row["adapted_on_pcn_idps"] = calibration(adapted, test, pcn_idps) if name != "pcntoolkit-blr" \
                        else None
                rows.append(row)
                print(json.dumps(row), flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                           "threads": args.threads, "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"))


def summary(rows: list[dict]) -> str:
    """A markdown table: per model, method and K, coverage95 and PIT-KS pass rate averaged over sites."""
    frame = []
    for r in rows:
        for method in ("none", "adapted", "adapted_embedding", "refit", "adapted_on_pcn_idps"):
            if r.get(method):
                seconds = {"none": 0.0, "adapted_embedding": r.get("adapt_embedding_s", 0.0),
                           "refit": r.get("refit_s", 0.0)}.get(method, r.get("adapt_s", 0.0))
                frame.append({"model": r["model"], "method": method, "k": r["k"], "sites": r["site"],
                              "coverage95": r[method]["coverage95"], "pit_pass": r[method]["pit_pass"],
                              "seconds": seconds})
    table = pd.DataFrame(frame).groupby(["model", "method", "k"]).agg(
        sites=("sites", "nunique"), coverage95=("coverage95", "mean"), pit_pass=("pit_pass", "mean"),
        seconds=("seconds", "median")).reset_index()
    lines = ["| model | method | K | sites | coverage95 | PIT-KS pass | median s |", "|---|---|---|---|---|---|---|"]
    for _, t in table.iterrows():
        lines.append(f"| {t.model} | {t.method} | {t.k} | {t.sites} | {t.coverage95:.3f} | {t.pit_pass:.3f} | "
                     f"{t.seconds:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Coverage of the central 95% interval against K, averaged over the left-out sites."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = []
    for r in rows:
        for method in ("none", "adapted", "adapted_embedding", "refit"):
            if r.get(method):
                frame.append({"k": r["k"], "label": f"{r['model']}: {method}", "coverage": r[method]["coverage95"]})
    table = pd.DataFrame(frame).groupby(["label", "k"])["coverage"].mean().unstack(0)
    ax = table.plot(marker="o", figsize=(7, 4.5))
    ax.axhspan(0.93, 0.97, color="0.9", zorder=0)
    ax.axhline(0.95, color="0.5", lw=0.8)
    ax.set_xlabel("local controls K")
    ax.set_ylabel("coverage of the central 95% interval")
    ax.set_title("fcon1000 leave-one-site-out (sites with >= 40 subjects)")
    plt.tight_layout()
    plt.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
