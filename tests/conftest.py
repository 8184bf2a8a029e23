"""Shared fixtures: small synthetic cohorts and a tiny fitted model (CPU, one thread)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from normcore import NormativeDiffusion, make_synthetic

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY = dict(backbone_params=dict(width=32, depth=1, emb_dim=16), timesteps=100, sampling_steps=8,
            epochs=3, batch_size=64, n_samples=200, device="cpu")


@pytest.fixture(scope="session", autouse=True)
def subprocess_tmpdir(tmp_path_factory):
    """Subprocesses the tests start (the CLI, torchrun and its elastic agent, a dashboard server) write their
    temporary files under the session's pytest folder, which pytest prunes, instead of leaving them in /tmp."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("subprocess-tmp")))
        yield


@pytest.fixture(scope="session")
def cohort():
    """(data frame, truth) with 300 controls, 20 patients, 4 IDPs and 3 sites."""
    return make_synthetic(300, d=4, patients=20, n_sites=3, seed=3)


@pytest.fixture(scope="session")
def tiny_model(cohort):
    df, truth = cohort
    controls = df[df.group == "control"]
    return NormativeDiffusion(**TINY).fit(controls, age="age", covariates=["sex", "site"], idps=truth.idp_names)


@pytest.fixture
def fcon_path():
    path = SHARED_DATA / "tabular" / "fcon1000.csv"
    if not path.is_file():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared/data)")
    return path
