import numpy as np
import pandas as pd
import pytest

from normcore._utils.errors import InputError
from normcore.tabular.covariates import MARGINALISE, CovariateEncoder


@pytest.fixture
def frame():
    return pd.DataFrame({"age": [20.0, 30.0, 40.0, 50.0], "sex": [0, 1, 1, 0], "site": ["a", "b", "a", "a"]})


def test_encoder_standardises_age_and_one_hot_encodes(frame):
    enc = CovariateEncoder("age", ["sex", "site"]).fit(frame)
    assert enc.dim == 1 + 2 + 2
    cond = enc.encode(enc.ages(frame), enc.codes(frame))
    assert cond.shape == (4, 5)
    assert abs(cond[:, 0].mean()) < 1e-6
    np.testing.assert_array_equal(cond[:, 1:3].sum(1), 1)
    assert enc.frequencies["site"] == [0.75, 0.25]


def test_batch_covariates_have_codes_but_no_network_input(frame):
    enc = CovariateEncoder("age", ["sex", "site"], batch=["site"]).fit(frame)
    assert enc.network_covariates == ["sex"] and enc.batch_columns == [1] and enc.dim == 1 + 2
    codes = enc.codes(frame)
    assert codes.shape == (4, 2)  # the site is coded (the location-scale stage reads it)
    other_site = codes.copy()
    other_site[:, 1] = 1 - other_site[:, 1]
    np.testing.assert_array_equal(enc.encode(enc.ages(frame), codes), enc.encode(enc.ages(frame), other_site))
    assert enc.block("sex") == slice(1, 3)
    with pytest.raises(ValueError, match="not an input of the network"):
        enc.block("site")
    added = enc.add_level("site", "new")
    assert not enc.adapted_mask(np.array([[0, added]])).any()  # a new batch level needs no network input
    again = CovariateEncoder.from_dict(enc.to_dict())
    assert again.batch == ["site"] and again.dim == 3
    assert "batch" not in CovariateEncoder("age", ["sex"]).fit(frame).to_dict()  # older cards' layout unchanged
    with pytest.raises(InputError, match="batch covariate"):
        CovariateEncoder("age", ["sex"], batch=["site"])


def test_encoder_treats_numeric_spellings_as_one_level(frame):
    enc = CovariateEncoder("age", ["sex"]).fit(frame)
    other = frame.assign(sex=[0.0, 1.0, "1", "0"])
    np.testing.assert_array_equal(enc.codes(other)[:, 0], [0, 1, 1, 0])


def test_unseen_level_is_an_error_unless_marginalised(frame):
    enc = CovariateEncoder("age", ["site"]).fit(frame)
    new = frame.assign(site=["a", "zz", "b", "a"])
    with pytest.raises(InputError, match="'zz'"):
        enc.codes(new)
    codes = enc.codes(new, allow_unseen=True)
    assert codes[1, 0] == MARGINALISE
    drawn = enc.resolve_marginalised(np.full((4000, 1), MARGINALISE), np.random.default_rng(0))
    assert abs((drawn == 0).mean() - 0.75) < 0.03


def test_out_of_range_ages_are_flagged(frame):
    enc = CovariateEncoder("age", []).fit(frame)
    np.testing.assert_array_equal(enc.out_of_range(np.array([19.0, 20.0, 50.0, 51.0])), [True, False, False, True])
