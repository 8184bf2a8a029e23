"""Normative modelling of T1 MRI: NIfTI IO, registration to MNI, latent diffusion pseudo-healthy restoration,
anomaly maps and the abnormality index.

Modules: ``io`` (loading and validation), ``grid`` (model grids, the MNI template), ``preprocess``
(orientation, brain mask, intensity, registration, resampling), ``config`` (presets), ``latent_space`` (the
first stage both models share), ``model`` (the restoration model), ``training``, ``restoration``, ``anomaly``,
``pipeline`` (one scan end to end), ``diffae`` (the normative diffusion autoencoder), ``latent_pipeline`` (one
scan through it), ``volumetry``, ``cohort`` (training folders), ``evaluation`` (metrics on labelled test cohorts),
``synthetic``.
Names below are imported on first use, so ``import normcore.imaging`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ImagingConfig": "normcore.imaging.config", "PRESETS": "normcore.imaging.config",
    "ImagingNormativeModel": "normcore.imaging.model", "ImagingScore": "normcore.imaging.model",
    "METHODS": "normcore.imaging.model", "ScanResult": "normcore.imaging.pipeline",
    "score_scan": "normcore.imaging.pipeline", "score_many": "normcore.imaging.pipeline",
    "export_maps": "normcore.imaging.pipeline", "evaluate_restoration": "normcore.imaging.evaluation",
    "NormativeDiffusionAutoencoder": "normcore.imaging.diffae", "analyse_scan": "normcore.imaging.latent_pipeline",
    "export_latent": "normcore.imaging.latent_pipeline", "load_volume": "normcore.imaging.io",
    "load_mask": "normcore.imaging.io", "save_nifti": "normcore.imaging.io",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'normcore.imaging' has no attribute {name!r}")
