"""The tabular model contract, run over every registered model type (as scikit-learn's check_estimator).

Each check states one promise of :class:`normcore.tabular.base.NormativeModel` that every model type
keeps: parameters from the constructor, the fitted-state API the pages use, the column layout of
``score`` / ``centiles`` / ``sample``, the input checks, ``predict_moments`` and persistence.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normcore import InputError, NormativeModel, load_model, make_model, make_synthetic
from normcore.registry import SAVABLE, TABULAR_MODELS, model_class
from normcore.tabular.base import NotFittedError
from normcore.tabular.baselines.pcntoolkit_blr import pcntoolkit_available
from tests.conftest import TINY

SETTINGS = {"film-mlp": {**TINY, "epochs": 1}, "saint": {**TINY, "epochs": 1, "backbone_params": {"dim": 16}},
            "shash-baseline": {}, "pcntoolkit-blr": {}}
TYPES = [pytest.param(name, marks=pytest.mark.skipif(
    name == "pcntoolkit-blr" and not pcntoolkit_available(), reason="PCNtoolkit not installed"))
    for name in TABULAR_MODELS]


@pytest.fixture(scope="module")
def data():
    df, truth = make_synthetic(240, d=3, patients=0, seed=5)
    return df, truth.idp_names


@pytest.fixture(scope="module")
def fitted(data):
    df, idps = data
    cache = {}

    def get(name: str) -> NormativeModel:
        if name not in cache:
            cache[name] = make_model(name, **SETTINGS[name]).fit(df, age="age", covariates=["sex"], idps=idps)
        return cache[name]

    return get


def test_every_type_has_settings_here():
    assert set(SETTINGS) == set(TABULAR_MODELS)


@pytest.mark.parametrize("name", TYPES)
def test_parameters_come_from_the_constructor(name):
    model = make_model(name, **SETTINGS[name])
    params = model.get_params()
    assert list(params) == model._param_names()
    clone = type(model)(**params)
    assert clone.get_params() == params
    first = next(iter(params))
    assert model.set_params(**{first: params[first]}) is model
    with pytest.raises(InputError, match="unknown parameter"):
        model.set_params(no_such_parameter=1)
    assert isinstance(model, NormativeModel) and model_class(name) is type(model)
    assert model.model_type == name


@pytest.mark.parametrize("name", TYPES)
def test_unfitted_model_says_so(name, data):
    df, _ = data
    model = make_model(name, **SETTINGS[name])
    assert not model.is_fitted
    with pytest.raises(NotFittedError, match="not fitted"):
        model.score(df.head(3))


@pytest.mark.parametrize("name", TYPES)
def test_fitted_state_api(name, fitted, data):
    df, idps = data
    model = fitted(name)
    assert model.is_fitted
    assert model.idps_ == idps and model.age_ == "age" and model.covariates_ == ["sex"]
    assert model.levels_ == {"sex": ["0", "1"]}
    lo, hi = model.age_range_
    assert lo == pytest.approx(df.age.min()) and hi == pytest.approx(df.age.max())
    assert model.required_columns_ == ["age", "sex", *idps]
    assert isinstance(model.fit_warnings_, list) and model.training_summary_["n_train"] > 0


@pytest.mark.parametrize("name", TYPES)
def test_score_frame(name, fitted, data):
    df, idps = data
    model = fitted(name)
    rows = df.head(6).copy()
    rows.loc[rows.index[0], idps[1]] = np.nan
    out = model.score(rows, n_samples=200, seed=1)
    expected = [*rows.columns, *[f"{k}:{i}" for i in idps for k in ("z", "centile")],
                "multivariate_d2", "multivariate_z", "n_beyond_samples", "out_of_range"]
    assert list(out.columns) == expected
    pd.testing.assert_frame_equal(out[rows.columns], rows)
    c = out[[f"centile:{i}" for i in idps]].to_numpy()
    assert np.isnan(c[0, 1]) and np.isnan(out[f"z:{idps[1]}"].iloc[0])
    finite = c[~np.isnan(c)]
    assert ((finite > 0) & (finite < 1)).all()
    assert not out["out_of_range"].any()


@pytest.mark.parametrize("name", TYPES)
def test_score_of_a_subset_of_idps(name, fitted, data):
    df, idps = data
    model = fitted(name)
    full = model.score(df.head(6), n_samples=200, seed=1)
    part = model.score(df.drop(columns=[idps[0]]).head(6), n_samples=200, seed=1)
    assert [c for c in part.columns if c.startswith("z:")] == [f"z:{i}" for i in idps[1:]]
    for i in idps[1:]:  # the present IDPs score as in the full table (same samples and seed)
        np.testing.assert_allclose(part[f"centile:{i}"], full[f"centile:{i}"])
    assert not np.allclose(part["multivariate_d2"], full["multivariate_d2"])


@pytest.mark.parametrize("name", TYPES)
def test_score_refuses_bad_tables(name, fitted, data):
    df, idps = data
    model = fitted(name)
    with pytest.raises(InputError, match="none of the model's 3 IDP columns"):
        model.score(df.drop(columns=idps).head(3))
    bad = df.head(3).astype({idps[2]: object})
    bad.loc[bad.index[1], idps[2]] = "n/a?"
    with pytest.raises(InputError, match=idps[2]):
        model.score(bad)
    unseen = df.head(3).assign(sex=7)
    with pytest.raises(InputError):
        model.score(unseen)


@pytest.mark.parametrize("name", TYPES)
def test_centile_frame(name, fitted, data):
    _, idps = data
    model = fitted(name)
    out = model.centiles([30.0, 50.0, 70.0], quantiles=(0.1, 0.5, 0.9), fixed={"sex": 1}, n_samples=400, seed=0)
    assert list(out.columns) == ["age", "sex", "idp", "quantile", "value"]
    assert len(out) == 3 * 3 * len(idps) and sorted(out.idp.unique()) == sorted(idps)
    wide = out.pivot_table(index=["idp", "age"], columns="quantile", values="value")
    assert (np.diff(wide.to_numpy(), axis=1) > 0).all()
    free = model.centiles([40.0], quantiles=(0.5,), n_samples=400, idps=[idps[0]])
    assert list(free.columns) == ["age", "idp", "quantile", "value"] and len(free) == 1
    with pytest.raises(InputError, match="cannot fix"):
        model.centiles([40.0], fixed={"site": "A"})
    with pytest.raises(InputError, match="not seen in training"):
        model.centiles([40.0], fixed={"sex": 5})
    with pytest.raises(InputError, match="strictly between"):
        model.centiles([40.0], quantiles=(0.0, 0.5))


@pytest.mark.parametrize("name", TYPES)
def test_sample_frame(name, fitted, data):
    df, idps = data
    model = fitted(name)
    cov = df[["age", "sex"]].head(3)
    out = model.sample(cov, n=4, seed=2)
    assert list(out.columns) == ["age", "sex", "sample", *idps]
    assert len(out) == 12 and out["sample"].tolist() == [0, 1, 2, 3] * 3
    assert np.isfinite(out[idps].to_numpy()).all()
    assert out["age"].tolist() == np.repeat(cov["age"].to_numpy(), 4).tolist()


@pytest.mark.parametrize("name", TYPES)
def test_predict_moments_takes_samples_and_seed(name, fitted, data):
    df, idps = data
    mean, var = fitted(name).predict_moments(df.head(5), n_samples=300, seed=4)
    assert mean.shape == var.shape == (5, len(idps))
    assert np.isfinite(mean).all() and (var > 0).all()


@pytest.mark.parametrize("name", TYPES)
def test_quantiles_and_moments_together_equal_the_quantiles_alone(name, fitted, data):
    """The PCNtoolkit export's one call gives the quantiles :meth:`predict_quantiles` gives with the same samples
    and seed, ordered, and a positive variance."""
    df, idps = data
    model = fitted(name)
    quant, mean, var = model.predict_quantiles_and_moments(df.head(5), (0.1, 0.5, 0.9), n_samples=300, seed=4)
    assert quant.shape == (3, 5, len(idps)) and mean.shape == var.shape == (5, len(idps))
    np.testing.assert_array_equal(quant, model.predict_quantiles(df.head(5), (0.1, 0.5, 0.9), n_samples=300, seed=4))
    assert (np.diff(quant, axis=0) > 0).all() and np.isfinite(mean).all() and (var > 0).all()
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        model.predict_quantiles_and_moments(df.head(5), (0.5, 1.0))


@pytest.mark.parametrize("name", TYPES)
def test_persistence(name, fitted, data, tmp_path):
    df, _ = data
    model = fitted(name)
    if name not in SAVABLE:
        with pytest.raises(InputError, match="not saved"):
            model.save(tmp_path / "m")
        return
    model.save(tmp_path / "m")
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["format"] == type(model).FORMAT and card["format_version"] == type(model).FORMAT_VERSION
    assert card["model_type"] == name and card["params"] == json.loads(json.dumps(model.get_params()))
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    pd.testing.assert_frame_equal(loaded.score(df.head(5), n_samples=200, seed=3),
                                  model.score(df.head(5), n_samples=200, seed=3))
    with pytest.raises(InputError, match="a tabular model, not an imaging restoration model"):
        load_model(tmp_path / "m", kind="imaging")


@pytest.mark.parametrize("name", TYPES)
def test_fit_on_a_table_missing_some_idp_values(name, data):
    """A model that says it fits incomplete rows uses every row; one that does not drops them, and says so."""
    df, idps = data
    gappy = df.copy()
    gappy.loc[gappy.index[::4], idps[0]] = np.nan
    model = make_model(name, **SETTINGS[name]).fit(gappy, age="age", covariates=["sex"], idps=idps)
    summary = model.training_summary_
    used = summary["n_train"] + summary["n_validation"]
    assert used == (len(df) if type(model).FITS_INCOMPLETE_ROWS else len(df) - len(df.index[::4]))
    assert any("miss some IDP values" in w for w in model.fit_warnings_)
    scores = model.score(df.head(20))
    assert np.isfinite(scores[[f"z:{c}" for c in idps]].to_numpy()).all()


@pytest.mark.parametrize("name", TYPES)
def test_z_does_not_depend_on_the_units_of_a_measure(name, fitted, data):
    """The same table with its IDPs in other units (x 1e-4: mm^2/s; x 1e3: mm^3 for cm^3) gives the same z. The
    location-scale stage once fitted each IDP in the units given, and its ridges pulled towards a level and a
    spread of 1 there: z moved by 0.03-0.09 at these factors. (PCNtoolkit standardises its responses itself; on one
    of these 240-row IDPs its warp's optimiser lands elsewhere when the values move by a millionth, z 0.05 apart:
    not a matter of units, so it is not held to this.)"""
    if name == "pcntoolkit-blr":
        pytest.skip("PCNtoolkit's optimum on this table moves with a change of a millionth in the values")
    df, idps = data
    reference = fitted(name).score(df.head(40), seed=0)[[f"z:{c}" for c in idps]].to_numpy()
    for units in (1e-4, 1e3):
        other = df.copy()
        other[idps] = other[idps] * units
        model = make_model(name, **SETTINGS[name]).fit(other, age="age", covariates=["sex"], idps=idps)
        z = model.score(other.head(40), seed=0)[[f"z:{c}" for c in idps]].to_numpy()
        np.testing.assert_allclose(z, reference, atol=1e-4)
