"""The single list of model types: construct one by name, load any saved model folder.

The CLI's ``--backbone`` choices and the dashboard's model choices are read from here.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

from normcore._utils.errors import InputError
from normcore.persistence import read_card


@dataclass(frozen=True)
class ModelType:
    """A registered tabular model type: where its class lives, and how users see it."""

    module: str
    cls: str
    label: str
    description: str


#: Tabular model types by registry name. Diffusion backbones first.
TABULAR_MODELS: dict[str, ModelType] = {
    "film-mlp": ModelType("normcore.tabular.diffusion_model", "NormativeDiffusion", "FiLM-MLP diffusion",
                          "conditional diffusion model of all IDPs jointly, FiLM-MLP denoiser"),
    "saint": ModelType("normcore.tabular.diffusion_model", "NormativeDiffusion", "SAINT diffusion",
                       "conditional diffusion model of all IDPs jointly, SAINT (attention) denoiser"),
    "shash-baseline": ModelType("normcore.tabular.baselines.shash_baseline", "LocationScaleSHASH",
                                "SHASH per-IDP baseline",
                                "classic per-IDP B-spline location-scale model with a SHASH likelihood"),
    "pcntoolkit-blr": ModelType("normcore.tabular.baselines.pcntoolkit_blr", "PCNToolkitBLR", "PCNtoolkit BLR",
                                "PCNtoolkit's warped Bayesian linear regression per IDP (optional; not saved)"),
}
DIFFUSION = ("film-mlp", "saint")
#: Types that ``fit`` can train and save (the CLI's ``--backbone`` choices).
SAVABLE = ("film-mlp", "saint", "shash-baseline")


def model_class(name: str) -> type:
    """The class implementing a registered tabular model type."""
    if name not in TABULAR_MODELS:
        raise InputError(f"unknown model {name!r}; choose one of {list(TABULAR_MODELS)}")
    entry = TABULAR_MODELS[name]
    return getattr(importlib.import_module(entry.module), entry.cls)


def make_model(name: str, **params):
    """A new unfitted tabular model of type ``name``; parameters it does not take are left out."""
    cls = model_class(name)
    if name in DIFFUSION:
        params = {**params, "backbone": name}
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in params.items() if k in accepted})


def _formats() -> dict[str, type]:
    out = {}
    for name in TABULAR_MODELS:
        cls = model_class(name) if name != "pcntoolkit-blr" else None  # optional dependency; never saved
        if cls is not None and cls.FORMAT:
            out[cls.FORMAT] = cls
    return out


def load_model(path: str | Path, device: str | None = None, kind: str | None = None):
    """Load a saved model folder of any type, dispatching on the format tag of its card.

    ``kind`` (``"tabular"``, ``"imaging"``: the restoration model, or ``"diffae"``: the diffusion autoencoder)
    refuses the other kinds with a message naming them. The imaging package is imported only for an imaging card.
    """
    fmt = read_card(path).get("format")
    tabular = _formats()
    if fmt in tabular:
        found, cls = "tabular", tabular[fmt]
    else:
        from normcore.imaging.diffae import FORMAT as DIFFAE_FORMAT
        from normcore.imaging.diffae import NormativeDiffusionAutoencoder
        from normcore.imaging.model import FORMAT as IMAGING_FORMAT
        from normcore.imaging.model import ImagingNormativeModel

        if fmt == IMAGING_FORMAT:
            found, cls = "imaging", ImagingNormativeModel
        elif fmt == DIFFAE_FORMAT:
            found, cls = "diffae", NormativeDiffusionAutoencoder
        else:
            raise InputError(f"{path}: unknown model format {fmt!r}")
    kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
    if kinds and found not in kinds:
        article = {"tabular": "a tabular model", "imaging": "an imaging restoration model (for mri-score)",
                   "diffae": "a diffusion autoencoder (for mri-latent)"}
        raise InputError(f"{path}: this is {article[found]}, not {' or '.join(article[k] for k in kinds)}")
    return cls.load(path, device=device) if found == "tabular" else cls.load(path, device=device or "auto")
