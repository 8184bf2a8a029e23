"""Figure builders: check the JSON spec of each figure, not pixels."""

import numpy as np
import pandas as pd

from normcore.plotting import tabular as plots


def scores_frame():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 3))
    z[2, 1] = 3.0
    frame = pd.DataFrame({"id": list("abcde")})
    for j, n in enumerate(["A", "B", "C"]):
        frame[f"z:{n}"] = z[:, j]
    return frame


def test_centile_fan_has_bands_median_and_points():
    ages = np.arange(20, 31.0)
    curves = pd.concat([pd.DataFrame({"age": ages, "idp": "A", "quantile": q, "value": ages + 10 * q})
                        for q in (0.05, 0.25, 0.5, 0.75, 0.95)])
    fig = plots.centile_fan(curves, "A", pd.DataFrame({"age": [25.0], "A": [30.0]}))
    names = [t.name for t in fig.data]
    assert "median" in names and "subjects" in names and "0.05–0.95" in names and "0.25–0.75" in names
    median = next(t for t in fig.data if t.name == "median")
    np.testing.assert_allclose(median.y, ages + 5)


def test_z_heatmap_is_centred_and_sortable():
    fig = plots.z_heatmap(scores_frame(), ["A", "B", "C"], id_col="id", sort_by="z:B").to_dict()
    heat = fig["data"][0]
    assert heat["zmid"] == 0 and heat["colorscale"][0][1] != heat["colorscale"][-1][1]
    assert list(heat["y"])[0] == "c"  # the subject with |z| = 3 on B comes first


def test_deviation_profile_colours_extremes():
    fig = plots.deviation_profile(scores_frame(), 2, ["A", "B", "C"]).to_dict()
    assert fig["data"][0]["marker"]["color"][1] == "#b2182b"


def test_correlation_heatmaps_difference_panel():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(500)
    real = pd.DataFrame({"A": a, "B": a + 0.1 * rng.standard_normal(500), "C": rng.standard_normal(500)})
    gen = pd.DataFrame({k: rng.standard_normal(500) for k in "ABC"})
    fig = plots.correlation_heatmaps(real, gen, ["A", "B", "C"])
    diff = np.asarray(fig.data[2].z)
    assert diff[0][1] < -0.8  # the model missed the strong A-B dependence
    layout = fig.to_dict()["layout"]  # row labels once, on the left panel: they overlapped the panel before
    assert layout["yaxis"].get("showticklabels", True) is True
    assert layout["yaxis2"]["showticklabels"] is False and layout["yaxis3"]["showticklabels"] is False


def test_pit_histogram_and_loss_curve():
    fig = plots.pit_histogram(np.linspace(0.01, 0.99, 100)).to_dict()
    assert fig["data"][0]["type"] == "histogram"
    loss = plots.loss_curve({"step": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6]}).to_dict()
    assert [t["name"] for t in loss["data"]] == ["train", "validation (EMA)"]
    fitted = plots.loss_curve({"step": [150, 300], "train_loss": [0.6, 0.5], "val_loss": [0.49, 0.50],
                               "initial_val_loss": 0.48, "kept_step": 0, "step0_denoiser": "gaussian-copula"}).to_dict()
    assert list(fitted["data"][1]["x"]) == [0, 150, 300] and list(fitted["data"][1]["y"]) == [0.48, 0.49, 0.50]
    assert fitted["layout"]["annotations"][0]["text"] == "kept: step 0 (gaussian-copula)"
    overruled = plots.loss_curve({"step": [150, 300], "train_loss": [0.6, 0.5], "val_loss": [0.47, 0.50],
                                  "initial_val_loss": 0.48, "kept_step": 0, "loss_kept_step": 150,
                                  "step0_denoiser": "gaussian-copula"}).to_dict()
    marks = {a["text"]: a["x"] for a in overruled["layout"]["annotations"]}
    assert marks == {"kept: step 0 (gaussian-copula) by the CRPS": 0, "lowest loss": 150}


def test_visit_trajectory_joins_a_subjects_visits_in_order():
    ages = np.arange(20.0, 81.0, 10.0)
    curves = pd.concat([pd.DataFrame({"age": ages, "idp": "A", "quantile": q, "value": ages * 0 + q})
                        for q in (0.05, 0.5, 0.95)])
    visits = pd.DataFrame({"visit": [3, 1, 2], "age": [44.0, 40.0, 42.0], "A": [0.3, 0.5, 0.4], "z:A": [-0.5, 0, -0.2]})
    trace = plots.visit_trajectory(curves, "A", visits, z_col="z:A").data[-1]
    assert trace.name == "visits" and list(trace.x) == [40.0, 42.0, 44.0] and list(trace.text) == ["1", "2", "3"]
    assert list(trace.customdata) == [0, -0.2, -0.5]


def test_values_most_of_the_reference_shares_are_grey_not_coloured_by_their_random_z():
    """A 0 that most of the reference has gets a random z: the heatmap greys it (a second trace) and the profile
    draws it pale, whatever its z; rows keep their sort order."""
    frame = scores_frame()
    shared = np.zeros((5, 3), bool)
    shared[2, 1] = shared[4, 0] = True  # subject c's B (z = 3) and e's A
    fig = plots.z_heatmap(frame, ["A", "B", "C"], id_col="id", sort_by="z:B", shared=shared)
    coloured, grey = (np.asarray(t.z, float) for t in fig.data)
    assert list(fig.data[0].y)[0] == "c" and np.isnan(coloured[0, 1]) and grey[0, 1] == 1
    e = list(fig.data[0].y).index("e")
    assert np.isnan(coloured[e, 0]) and np.isfinite(coloured[e, 1]) and np.isnan(grey).sum() == 13
    assert len(plots.z_heatmap(frame, ["A", "B", "C"]).data) == 1  # nothing shared: one trace
    bars = plots.deviation_profile(frame, 2, ["A", "B", "C"], shared=shared).data[0]
    assert bars.marker.color[1] == plots.SHARED_COLOUR and "shares" in bars.customdata[1]
