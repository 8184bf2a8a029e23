"""The demo shipped with the app: models fitted on the synthetic benchmark, and their cohort."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from normcore.tabular.synthetic import SyntheticTruth

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEMO_MODELS = {"FiLM-MLP (demo)": "demo-film-mlp", "SAINT (demo)": "demo-saint",
               "SHASH baseline (demo)": "demo-shash-baseline"}
DEMO_TRUTH = MODELS_DIR / "demo-cohort.truth.json"
DEMO_N, DEMO_PATIENTS, DEMO_SEED = 600, 60, 1  # small enough that every page scores it in seconds


def demo_truth() -> SyntheticTruth:
    return SyntheticTruth.load(DEMO_TRUTH)


def demo_cohort() -> pd.DataFrame:
    """The demo cohort, regenerated exactly from the shipped truth (controls and patients)."""
    return demo_truth().sample(DEMO_N, seed=DEMO_SEED, patients=DEMO_PATIENTS)


def available_demo_models() -> dict[str, Path]:
    found = {label: MODELS_DIR / name for label, name in DEMO_MODELS.items()}
    return {label: path for label, path in found.items() if (path / "model.json").is_file()}
