"""Shared fixtures: small synthetic cohorts and a tiny fitted model (CPU, one thread)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import special

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


@pytest.fixture(scope="session")
def censored_cohort():
    """``make(n, seed)``: a cohort with a measure that is 0 for most people (more so when young: 95% at 20, 80% at
    80; above 0 uniform on 5-15), one that is 0 for 40% (``max(0, 20 (e + 0.25))``, e standard normal, to 0.1),
    and a continuous one."""
    def make(n: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        age = rng.uniform(20, 80, n)
        e = rng.normal(size=(n, 3))
        absent = np.where(e[:, 0] <= special.ndtri(0.95 - 0.15 * (age - 20) / 60), 0.0, 5.0 + 10 * rng.random(n))
        often = np.maximum(0.0, 20 * (e[:, 1] + 0.25)).round(1)
        return pd.DataFrame({"age": age, "sex": rng.integers(0, 2, n), "absent": absent, "often_zero": often,
                             "normal": 3 + 0.01 * age + 0.3 * e[:, 2]})
    return make


@pytest.fixture
def fcon_path():
    path = SHARED_DATA / "tabular" / "fcon1000.csv"
    if not path.is_file():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared/data)")
    return path
