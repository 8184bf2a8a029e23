"""The shipped models load and score exactly as the version that wrote tests/fixtures/golden did.

The reference outputs were written by ``tests/fixtures/golden/make_golden.py`` before the architecture
redesign; the same calls (fixed seeds, CPU) must reproduce them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden"


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["demo-film-mlp", "demo-saint", "demo-shash-baseline"])
def test_shipped_tabular_models_score_as_before(name):
    scores, curves = _golden_module().tabular_outputs(name)
    ref_scores = pd.read_csv(GOLDEN / f"{name}.scores.csv", dtype={"sub_id": str})
    ref_curves = pd.read_csv(GOLDEN / f"{name}.centiles.csv")
    assert list(scores.columns) == list(ref_scores.columns)
    assert list(curves.columns) == list(ref_curves.columns)
    for col in ref_scores.columns:
        if pd.api.types.is_numeric_dtype(ref_scores[col]):
            np.testing.assert_allclose(scores[col].to_numpy(float), ref_scores[col].to_numpy(float), rtol=1e-6,
                                       atol=1e-8, err_msg=col)
        else:
            assert scores[col].astype(str).tolist() == ref_scores[col].astype(str).tolist(), col
    assert curves["idp"].tolist() == ref_curves["idp"].tolist()
    np.testing.assert_allclose(curves[["age", "quantile", "value"]].to_numpy(float),
                               ref_curves[["age", "quantile", "value"]].to_numpy(float), rtol=1e-6, atol=1e-8)


def test_shipped_imaging_model_scores_as_before():
    out = _golden_module().imaging_outputs()
    ref = json.loads((GOLDEN / "mri-ixi-cpu.json").read_text())
    for scan in ("healthy", "lesion"):
        for key in ("index", "centile"):
            for k, v in ref[scan][key].items():
                assert out[scan][key][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (scan, key, k)
        assert out[scan]["latent_mask_share"] == pytest.approx(ref[scan]["latent_mask_share"], abs=1e-9)
        np.testing.assert_allclose(out[scan]["restoration"], ref[scan]["restoration"], atol=2e-6)
        np.testing.assert_allclose(out[scan]["zmap"], ref[scan]["zmap"], atol=2e-4)
