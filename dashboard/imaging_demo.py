"""The shipped demo imaging model and demo scans (paths only; nothing is downloaded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "models" / "mri-ixi-cpu"
DEMO_SCANS = ROOT / "models" / "mri-demo-scans"


def demo_model_dir() -> Path | None:
    """The imaging model the dashboard starts with (``NORMDIFF_MRI_MODEL`` overrides); None if absent."""
    path = Path(os.environ.get("NORMDIFF_MRI_MODEL", DEMO_MODEL))
    return path if (path / "model.json").is_file() else None


def demo_scans(folder: Path | None = None) -> list[dict]:
    """Demo scans listed in ``demo.json``: name, path, age, sex, optional brain and lesion mask paths.

    Demo scans are stored on the model grid in MNI space, so they are scored with ``register=False``.
    """
    folder = Path(os.environ.get("NORMDIFF_MRI_DEMO_SCANS", folder or DEMO_SCANS))
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
