"""The evaluation suite's summaries computed from score tables."""

import numpy as np
import pandas as pd
import pytest
from scipy import special

from normcore.tabular.evaluation import multivariate_calibration


def test_multivariate_calibration_counts_controls_beyond_the_scores_centiles():
    centiles = (np.arange(1000) + 0.5) / 1000  # exactly uniform: the nominal shares
    scores = pd.DataFrame({"multivariate_z": np.r_[special.ndtri(centiles), np.nan]})
    cal = multivariate_calibration(scores)
    assert cal["n"] == 1000  # the missing score is left out
    assert cal["share_above_95"] == pytest.approx(0.05) and cal["share_above_99"] == pytest.approx(0.01)
    assert abs(cal["median_z"]) < 0.01 and cal["pit_ks_p"] > 0.99
    wide = multivariate_calibration(pd.DataFrame({"multivariate_z": 1.5 * special.ndtri(centiles)}))
    assert wide["share_above_95"] == pytest.approx(0.136, abs=0.002) and wide["pit_ks_p"] < 1e-6
    assert multivariate_calibration(pd.DataFrame({"z:a": [0.1]})) == {"n": 0}


def test_curve_ace_against_a_truth_with_sites_at_the_first_site_or_at_every_site():
    from normcore import make_model
    from normcore.tabular.evaluation import ace_against_synthetic_truth
    from normcore.tabular.synthetic import SyntheticTruth

    truth = SyntheticTruth.create(d=2, n_sites=3, seed=5)
    model = make_model("shash-baseline").fit(truth.sample(1500, seed=6), age="age", covariates=["sex", "site"],
                                             idps=truth.idp_names)
    first = ace_against_synthetic_truth(model, truth, step=10.0)
    every = ace_against_synthetic_truth(model, truth, step=10.0, all_sites=True)
    assert "ace_per_site" not in first and list(every["ace_per_site"]) == truth.site_names
    assert every["ace_per_site"]["site_01"] == pytest.approx(first["ace"])
    assert every["ace"] == pytest.approx(np.mean(list(every["ace_per_site"].values())))
    assert len(set(every["ace_per_site"].values())) == 3  # each site's own curves against its own truth
    assert 0 < every["ace"] < 0.1
