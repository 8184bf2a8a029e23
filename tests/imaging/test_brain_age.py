"""Brain age: the ridge read-out, its cross-fitted and age-bias-corrected healthy reference, and its persistence."""

from __future__ import annotations

import numpy as np
import pytest

from normcore._utils.errors import InputError
from normcore.imaging.brain_age import BrainAgeReadout


def ageing_features(ages: np.ndarray, seed: int, n_features: int = 300, noise: float = 1.0) -> np.ndarray:
    """Features where age is a direction spread over many features plus independent noise (more features than scans,
    like a flattened latent)."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(0).normal(size=n_features) / np.sqrt(n_features)
    return np.outer((ages - 50) / 15, direction) * 4 + rng.normal(scale=noise / np.sqrt(n_features),
                                                                   size=(len(ages), n_features))


@pytest.fixture(scope="module")
def healthy():
    rng = np.random.default_rng(1)
    ages, val_ages = rng.uniform(20, 85, 80), rng.uniform(20, 85, 20)
    return ages, ageing_features(ages, 2), val_ages, ageing_features(val_ages, 3)


@pytest.fixture(scope="module")
def readout(healthy):
    ages, x, val_ages, val_x = healthy
    return BrainAgeReadout(seed=0).fit(x, ages, val_x, val_ages)


def test_the_read_out_predicts_the_age_of_unseen_scans(readout):
    ages = np.linspace(25, 80, 30)
    pred = readout.predict(ageing_features(ages, 9))
    assert np.abs(pred - ages).mean() < 0.5 * np.abs(ages - ages.mean()).mean()
    assert np.corrcoef(pred, ages)[0, 1] > 0.8


def test_the_reference_is_cross_fitted_so_no_scan_is_its_own_reference(healthy, readout):
    """In-sample the read-out (more features than scans) fits its training ages almost exactly; the reference gaps
    are those of scans left out of the regression that predicted them, so their error is the held-out one."""
    ages, x, val_ages, _ = healthy
    in_sample = np.abs(readout.predict(x) - ages).mean()
    assert readout.reference_gaps_.size == len(ages) + len(val_ages)
    assert readout.reference_mae_ > 3 * in_sample
    held_out = np.abs(readout.predict(ageing_features(val_ages, 11)) - val_ages).mean()
    assert readout.reference_mae_ == pytest.approx(held_out, rel=0.6)


def test_the_corrected_gap_does_not_depend_on_age_among_healthy_people(readout):
    assert abs(np.corrcoef(readout.reference_gaps_, readout.reference_ages_)[0, 1]) < 1e-6
    assert readout.bias_[0] < 0  # the shrunk read-out over-predicts the young and under-predicts the old
    young, old = np.full(200, 25.0), np.full(200, 80.0)
    gaps = [np.mean([b.gap_years for b in readout.score(ageing_features(a, 5), a)]) for a in (young, old)]
    assert abs(gaps[0] - gaps[1]) < 2.0


def test_a_brain_that_looks_older_ranks_high_and_has_a_positive_gap(readout):
    ages = np.full(10, 45.0)
    same = readout.score(ageing_features(ages, 21), ages)
    older = readout.score(ageing_features(ages + 25, 21), ages)
    assert all(o.gap_years > s.gap_years + 10 for o, s in zip(older, same, strict=True))
    assert np.mean([o.centile for o in older]) > 0.9 and all(o.z > 1.5 for o in older)
    assert 0.15 < np.mean([s.centile for s in same]) < 0.85
    assert "older" in older[0].text() and str(older[0].n_reference) in older[0].text()


def test_arrays_round_trip_and_models_without_a_read_out(readout):
    arrays = readout.to_arrays()
    again = BrainAgeReadout.from_arrays(arrays)
    x, ages = ageing_features(np.array([30.0, 70.0]), 4), [30.0, 70.0]
    assert [b.to_dict() for b in again.score(x, ages)] == [b.to_dict() for b in readout.score(x, ages)]
    assert BrainAgeReadout.from_arrays({"other": np.zeros(2)}) is None
    with pytest.raises(InputError, match="incomplete"):
        BrainAgeReadout.from_arrays({k: v for k, v in arrays.items() if not k.endswith("bias")})


def test_bad_inputs_are_refused_with_a_message(healthy, readout):
    ages, x, _, _ = healthy
    with pytest.raises(InputError, match="at least"):
        BrainAgeReadout().fit(x[:4], ages[:4])
    with pytest.raises(InputError, match="ages"):
        BrainAgeReadout().fit(x, ages[:-1])
    with pytest.raises(InputError, match="features per scan"):
        readout.predict(x[:, :10])


def test_a_feature_constant_in_training_does_not_blow_up_a_new_scans_prediction(healthy):
    ages, x, _, _ = healthy
    padded = np.c_[x, np.zeros(len(x)), np.r_[1e-9, np.zeros(len(x) - 1)]]  # constant, and nearly constant
    readout = BrainAgeReadout().fit(padded, ages)
    new = ageing_features(np.array([50.0]), 8)
    plain = readout.predict(np.c_[new, [[0.0, 0.0]]])
    odd = readout.predict(np.c_[new, [[5.0, 5.0]]])  # values far outside what training saw in those features
    assert abs(odd[0] - plain[0]) < 20
