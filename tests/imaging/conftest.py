"""Imaging fixtures: a tiny healthy cohort on the tests' grid and a tiny fitted model (CPU, one thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normcore.imaging.grid import template_on_grid
from normcore.imaging.model import ImagingNormativeModel

torch.set_num_threads(1)


def template_copies(n: int, seed: int) -> dict:
    """``n`` noisy, rescaled copies of the MNI template on the tiny grid with ages 20-80, sexes and brain masks."""
    grid = ImagingNormativeModel("tiny").grid
    template, brain = template_on_grid(grid)
    rng = np.random.default_rng(seed)
    scale = 1 + 0.05 * rng.standard_normal((n, 1, 1, 1))
    vols = np.clip(template[None] * scale + 0.02 * rng.standard_normal((n, *grid.shape)), 0, 1) * brain
    return {"grid": grid, "volumes": vols.astype(np.float32), "brains": np.repeat(brain[None], n, 0),
            "ages": rng.uniform(20, 80, n), "sexes": list(rng.choice(["M", "F"], n))}


@pytest.fixture(scope="session")
def tiny_cohort():
    """14 template copies (see ``template_copies``)."""
    return template_copies(14, 0)


@pytest.fixture(scope="session")
def tiny_imaging_model(tiny_cohort):
    c = tiny_cohort
    return ImagingNormativeModel("tiny", device="cpu").fit(
        c["volumes"][:8], c["brains"][:8], c["ages"][:8], c["sexes"][:8],
        c["volumes"][8:12], c["brains"][8:12], c["ages"][8:12], c["sexes"][8:12])


@pytest.fixture(scope="session")
def diffae_cohort():
    """28 template copies: the semantic latent's normative model needs 20 training rows."""
    return template_copies(28, 1)


@pytest.fixture(scope="session")
def tiny_diffae(diffae_cohort):
    """A tiny diffusion autoencoder: 22 training and 6 validation scans, a 4-dimensional semantic latent."""
    from normcore.imaging.diffae import NormativeDiffusionAutoencoder

    c, tr = diffae_cohort, slice(0, 22)
    va = slice(22, None)
    model = NormativeDiffusionAutoencoder("tiny", semantic_dim=4, inversion_steps=20, matched_k=3, device="cpu",
                                          latent_model_params={"epochs": 3, "n_samples": 100, "sampling_steps": 8})
    return model.fit(c["volumes"][tr], c["brains"][tr], c["ages"][tr], c["sexes"][tr], c["volumes"][va],
                     c["brains"][va], c["ages"][va], c["sexes"][va])
