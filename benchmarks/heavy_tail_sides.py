"""Which IDP sides the fit gives a generalised Pareto tail, on cohorts of several kinds and sizes.

    .venv/bin/python benchmarks/heavy_tail_sides.py [--parts truths,unfamiliar,demo,fcon1000] [--threads 2]
        [--root DIR]

The quantile map's heavy-tail test (``normcore/tabular/heavy_tails.py``) runs in the fit, before the network
trains; a side it flags maps values beyond the training range through a GPD instead of the line. This script fits
FiLM-MLP for one epoch (the flags do not depend on the network) and prints, per cohort, how many of its sides are
flagged and which:

- ``truths``: the shipped synthetic family (``SyntheticTruth``, D = 10, seeds 0, 7 and 11: normal, skewed and
  bimodal IDPs, none heavy-tailed) at 600, 1000, 2000 and 5000 controls. A flag there is a false one.
- ``unfamiliar``: ``benchmarks/unfamiliar_truth.py``'s lifespan truth (4 Student-t(4) IDPs, 4 skewed) at 600-4000
  controls: 8 t sides to find, 8 skewed sides not to flag.
- ``demo``: the dashboard's demo cohort's 600 controls.
- ``fcon1000``: the real table's training splits 0 and 1 of ``benchmarks/compare.py`` (862 subjects, 213 IDPs;
  skipped without ``../shared/data``).

``--root`` imports normcore from another checkout (before and after).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TRUTH_SEEDS = (0, 7, 11)
TRUTH_ROWS = (600, 1000, 2000, 5000)
UNFAMILIAR_ROWS = (600, 1000, 1500, 2000, 4000)


def flagged(make_model, name: str, table, covariates: list[str], idps: list[str]) -> dict:
    model = make_model("film-mlp", seed=0, epochs=1)
    model.fit(table, age="age", covariates=covariates, idps=idps)
    sides = [f"{idps[j]} {side}" for j, side in model.transformer_.heavy_tail_sides()]
    return {"cohort": name, "rows": len(table), "sides": 2 * len(idps), "flagged": len(sides), "which": sides}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="truths,unfamiliar,demo,fcon1000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", default=str(HERE.parent))
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    torch.set_num_threads(args.threads)
    from normcore.registry import make_model  # from --root, before compare.py puts this checkout first
    from normcore.tabular.synthetic import SyntheticTruth

    sys.path.append(str(HERE.parent))
    parts = args.parts.split(",")
    rows = []
    if "truths" in parts:
        for seed in TRUTH_SEEDS:
            truth = SyntheticTruth.create(d=10, seed=seed)
            for n in TRUTH_ROWS:
                rows.append(flagged(make_model, f"truth {seed}", truth.sample(n, seed=100), ["sex"], truth.idp_names))
                print(json.dumps(rows[-1]), flush=True)
    if "unfamiliar" in parts:
        from unfamiliar_truth import D, UnfamiliarTruth

        for n in UNFAMILIAR_ROWS:
            table, _ = UnfamiliarTruth().draw(n, seed=0)
            rows.append(flagged(make_model, "unfamiliar", table, ["sex", "site"], [f"idp_{j + 1}" for j in range(D)]))
            print(json.dumps(rows[-1]), flush=True)
    if "demo" in parts:
        from dashboard.demo import demo_cohort

        demo = demo_cohort()
        controls = demo[demo.group == "control"].reset_index(drop=True)
        rows.append(flagged(make_model, "demo controls", controls, ["sex"],
                            [c for c in demo.columns if c.startswith("idp_")]))
        print(json.dumps(rows[-1]), flush=True)
    if "fcon1000" in parts:
        from compare import FCON, fcon_split

        if not FCON.is_file():
            print(json.dumps({"cohort": "fcon1000", "skipped": f"{FCON} not found"}), flush=True)
        else:
            for split in (0, 1):
                train, _, idps = fcon_split(split)
                rows.append(flagged(make_model, f"fcon1000 split {split}", train, ["sex", "site"], idps))
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
