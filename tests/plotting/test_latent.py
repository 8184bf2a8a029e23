"""Diffusion autoencoder figure builders: known answers on hand-made inputs."""

import numpy as np
import pandas as pd

from normcore.plotting.latent import (
    brain_age_figure,
    counterfactual_figure,
    counterfactual_volumes_figure,
    latent_position_figure,
    latent_profile_figure,
)
from tests.plotting.test_imaging import spec, values


def test_profile_marks_dimensions_beyond_two():
    fig = spec(latent_profile_figure([0.5, -2.5, 3.0, 1.9]))
    bars = fig["data"][0]
    assert list(values(bars["y"])) == [0.5, -2.5, 3.0, 1.9]
    grey, red = "rgb(120,120,120)", "rgb(200,40,40)"
    assert bars["marker"]["color"] == [grey, red, red, grey]


def test_position_shows_the_scan_the_matched_group_and_the_trend():
    position = {"healthy_age": np.array([30.0, 40.0, 50.0, 60.0]), "healthy_sex": np.array(["F", "M", "F", "M"]),
                "healthy_coord": np.array([-1.0, 0.0, 1.0, 2.0]), "matched": np.array([1, 3]),
                "trend_age": np.array([30.0, 60.0]), "trend_coord": np.array([-1.0, 2.0]), "age": 45.0, "coord": 3.5}
    fig = spec(latent_position_figure(position))
    names = [t["name"] for t in fig["data"]]
    assert names == ["healthy F", "healthy M", "matched healthy (cosine)", "healthy trend", "this scan"]
    assert list(values(fig["data"][0]["x"])) == [30.0, 50.0]
    assert list(values(fig["data"][2]["x"])) == [40.0, 60.0]
    assert list(values(fig["data"][4]["y"])) == [3.5]


def test_brain_age_figure_shows_the_healthy_band_and_the_scan():
    ages = np.linspace(20, 80, 101)
    gaps = np.linspace(-10, 10, 101)  # 5th and 95th centiles at -9 and +9
    fig = spec(brain_age_figure(ages, gaps, 90.0, 12.5))
    band, healthy, scan = fig["data"]
    assert list(values(band["y"])) == [9.0, 9.0, -9.0, -9.0]
    assert list(values(band["x"])) == [20.0, 90.0, 90.0, 20.0]  # reaches the scan's age beyond the reference's
    assert healthy["name"] == "healthy (n = 101)" and list(values(scan["y"])) == [12.5]


def test_counterfactual_difference_is_the_slice_difference_on_a_symmetric_scale():
    rng = np.random.default_rng(0)
    recon = rng.uniform(0, 1, (6, 7, 8)).astype(np.float32)
    cf = np.clip(recon + 0.1, 0, 1)
    fig = spec(counterfactual_figure(recon, cf, 40, 60, "axial", 3))
    diff = fig["data"][2]
    assert diff["zmin"] == -diff["zmax"] and diff["zmax"] > 0
    np.testing.assert_allclose(values(diff["z"]), values(fig["data"][1]["z"]) - values(fig["data"][0]["z"]),
                               atol=1e-6)
    assert [a["text"] for a in fig["layout"]["annotations"]][:2] == ["at 40 (own age, reconstructed)",
                                                                     "at 60 (counterfactual)"]
    brain = np.zeros(recon.shape, bool)
    brain[1:4] = True
    masked = values(spec(counterfactual_figure(recon, cf, 40, 60, "axial", 3, brain=brain))["data"][2]["z"])
    assert np.isnan(masked[:, [0, 4, 5]]).all() and np.isfinite(masked[:, 1:4]).all()  # rows are y, columns x


def test_counterfactual_volumes_line_is_in_age_order_with_the_healthy_trend():
    healthy = pd.DataFrame({"age": [20.0, 40.0, 60.0, 80.0, 30.0], "sex": [0.0, 0.0, 0.0, 0.0, 1.0],
                            "ventricle_ml": [5.0, 6.0, 7.0, 8.0, 9.0], "tissue_ml": [1.0] * 5})
    vols = [{"age": 50.0, "kind": "reconstruction", "ventricle_ml": 6.5, "tissue_ml": 1.0},
            {"age": 70.0, "kind": "counterfactual", "ventricle_ml": 7.5, "tissue_ml": 1.0},
            {"age": 30.0, "kind": "counterfactual", "ventricle_ml": 5.5, "tissue_ml": 1.0}]
    fig = spec(counterfactual_volumes_figure(healthy, vols, "F"))
    by_name = {t["name"]: t for t in fig["data"]}
    assert list(values(by_name["this brain at other ages"]["x"])) == [30.0, 50.0, 70.0]
    assert list(values(by_name["own age"]["x"])) == [50.0]
    trend = values(by_name["healthy F trend"]["y"])
    np.testing.assert_allclose(trend, [5.0, 8.0])  # 0.05 ml per year among the four women
    assert list(values(by_name["healthy F"]["x"])) == [20.0, 40.0, 60.0, 80.0]
