"""Train the demo models shipped in models/ (synthetic benchmark, D=10, sex as covariate).

    .venv/bin/python benchmarks/train_demo.py [--only demo-film-mlp,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard.demo import DEMO_TRUTH, MODELS_DIR  # noqa: E402
from normcore.registry import make_model  # noqa: E402
from normcore.tabular.synthetic import SyntheticTruth  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated subset of the demo models to retrain")
    only = [n for n in ap.parse_args().only.split(",") if n]
    torch.set_num_threads(2)
    truth = SyntheticTruth.create(d=10, seed=0)
    MODELS_DIR.mkdir(exist_ok=True)
    truth.save(DEMO_TRUTH)
    train = truth.sample(5000, seed=100)
    configs = {"demo-film-mlp": ("film-mlp", {}),
               "demo-saint": ("saint", dict(epochs=120, backbone_params={"dim": 32, "depth": 2, "heads": 4})),
               "demo-shash-baseline": ("shash-baseline", {})}
    for name, (kind, cfg) in configs.items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        model = make_model(kind, **cfg, seed=0)
        model.fit(train, age="age", covariates=["sex"], idps=truth.idp_names)
        model.save(MODELS_DIR / name)
        print(f"{name}: fitted in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
