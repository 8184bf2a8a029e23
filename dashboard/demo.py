"""Where the dashboard finds its shipped demo models, demo data and the user's saved models.

Paths of this checkout, kept out of ``normcore`` (the library knows no checkout). Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from normcore import SyntheticTruth

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"
LIBRARY_ROOT = Path(os.environ.get("NORMDIFF_LIBRARY", MODELS_DIR))  # sessions/ (private) and user/ (shared)
USER_MODELS = LIBRARY_ROOT / "user"
REFERENCE_MODELS = {"fcon1000 healthy reference (FiLM-MLP)": "fcon1000-film-mlp"}
DEMO_MODELS = {"FiLM-MLP (demo)": "demo-film-mlp", "SAINT (demo)": "demo-saint",
               "SHASH baseline (demo)": "demo-shash-baseline"}
DEMO_TRUTH = MODELS_DIR / "demo-cohort.truth.json"
DEMO_N, DEMO_PATIENTS, DEMO_SEED = 600, 60, 1  # small enough that every page scores it in seconds
DEMO_MRI_MODEL = MODELS_DIR / "mri-ixi-cpu"
DEMO_MRI_SCANS = MODELS_DIR / "mri-demo-scans"
DEMO_MRI_LATENT_MODEL = MODELS_DIR / "mri-ixi-diffae-cpu"


def demo_truth() -> SyntheticTruth:
    return SyntheticTruth.load(DEMO_TRUTH)


def demo_cohort() -> pd.DataFrame:
    """The demo cohort, regenerated exactly from the shipped truth (controls and patients)."""
    return demo_truth().sample(DEMO_N, seed=DEMO_SEED, patients=DEMO_PATIENTS)


def available_demo_models() -> dict[str, Path]:
    found = {label: MODELS_DIR / name for label, name in DEMO_MODELS.items()}
    return {label: path for label, path in found.items() if (path / "model.json").is_file()}


def available_reference_models(saved: dict[str, Path] | None = None) -> dict[str, Path]:
    """Shipped references of real data, then the synthetic demos, then ``saved`` (a session's own models and
    the published ones: :meth:`dashboard.library.SessionLibrary.saved`)."""
    found = {label: MODELS_DIR / name for label, name in REFERENCE_MODELS.items()}
    out = {label: path for label, path in found.items() if (path / "model.json").is_file()}
    out.update(available_demo_models())
    out.update(saved or {})
    return out


def demo_model_dir() -> Path | None:
    """The imaging model the dashboard starts with (``NORMDIFF_MRI_MODEL`` overrides); None if absent."""
    path = Path(os.environ.get("NORMDIFF_MRI_MODEL", DEMO_MRI_MODEL))
    return path if (path / "model.json").is_file() else None


def latent_model_dir() -> Path | None:
    """The diffusion autoencoder of the MRI page's whole-brain panels (``NORMDIFF_MRI_LATENT_MODEL`` overrides);
    None if absent."""
    path = Path(os.environ.get("NORMDIFF_MRI_LATENT_MODEL", DEMO_MRI_LATENT_MODEL))
    return path if (path / "model.json").is_file() else None


def demo_scans(folder: Path | None = None) -> list[dict]:
    """Demo scans listed in ``demo.json``: name, path, age, sex, optional brain and lesion mask paths.

    Demo scans are stored on the model grid in MNI space, so they are scored with ``register=False``; their
    intensities were normalised at the scan's own resolution (``normalised_inset_mm``), so scoring keeps them.
    """
    folder = Path(os.environ.get("NORMDIFF_MRI_DEMO_SCANS", folder or DEMO_MRI_SCANS))
    index = folder / "demo.json"
    if not index.is_file():
        return []
    out = []
    for entry in json.loads(index.read_text())["scans"]:
        item = dict(entry)
        for key in ("file", "brain", "lesion_mask"):
            if item.get(key):
                item[key] = folder / item[key]
        out.append(item)
    return out
