"""Every fitted-model type by name: construct by backbone name, load any saved model folder."""

from __future__ import annotations

import json
from pathlib import Path

from normcore.errors import InputError

BASELINES = ("shash-baseline",)
DIFFUSION = ("film-mlp", "saint")


def make_model(backbone: str, **params):
    """A new unfitted estimator: a diffusion backbone name or a baseline name."""
    if backbone in DIFFUSION:
        from normcore.tabular.model import NormativeDiffusion

        return NormativeDiffusion(backbone=backbone, **params)
    if backbone == "shash-baseline":
        from normcore.baselines import LocationScaleSHASH

        keep = {k: v for k, v in params.items() if k in LocationScaleSHASH.PARAMS}
        return LocationScaleSHASH(**keep)
    raise InputError(f"unknown model {backbone!r}; choose one of {[*DIFFUSION, *BASELINES]}")


def load_model(path: str | Path, device: str | None = None):
    """Load a saved model folder of any type, dispatching on the format tag of its JSON card."""
    from normcore.baselines.location_scale_shash import FORMAT as SHASH_FORMAT
    from normcore.baselines.location_scale_shash import LocationScaleSHASH
    from normcore.tabular.model import FORMAT as DIFFUSION_FORMAT
    from normcore.tabular.model import NormativeDiffusion

    card_path = Path(path) / "model.json"
    if not card_path.is_file():
        raise InputError(f"{path}: not a model folder (expected model.json and model.safetensors)")
    try:
        fmt = json.loads(card_path.read_text()).get("format")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise InputError(f"{card_path}: not a valid model card") from None
    loaders = {DIFFUSION_FORMAT: NormativeDiffusion, SHASH_FORMAT: LocationScaleSHASH}
    if fmt not in loaders:
        raise InputError(f"{path}: unknown model format {fmt!r}")
    return loaders[fmt].load(path, device=device)
