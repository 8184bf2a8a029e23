"""MRI figure builders: slice orientation known answers, best slice, heatmap specs."""

import base64
import json

import numpy as np
import pytest

from normcore.imaging.slices import axis_index, slice_of
from normcore.plotting.imaging import (
    best_slice,
    cohort_table,
    most_abnormal_slice,
    overlay_figure,
    quality_table,
    triptych_figure,
)


def values(z) -> np.ndarray:
    """An array from a plotly JSON spec (plain lists or plotly's base64 typed arrays, 1-D ones without a shape)."""
    if isinstance(z, dict):
        flat = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
        return flat.reshape(tuple(int(s) for s in str(z["shape"]).split(","))) if "shape" in z else flat
    return np.array(z, dtype=float)


def spec(fig) -> dict:
    return json.loads(fig.to_json())


@pytest.fixture
def vol():
    """vol[x, y, z] = 100 x + 10 y + z on a (2, 3, 4) RAS grid: every voxel names its coordinates."""
    x, y, z = np.meshgrid(np.arange(2), np.arange(3), np.arange(4), indexing="ij")
    return (100 * x + 10 * y + z).astype(float)


def test_axial_slice_x_across_anterior_up(vol):
    s = slice_of(vol, "axial", 1)
    assert s.shape == (3, 2)  # rows = y, columns = x
    assert s[0, 0] == 21  # top left: most anterior y = 2, leftmost x = 0 (neurological convention)
    assert s[-1, 0] == 1  # bottom left: posterior
    assert s[0, -1] == 121  # top right: the subject's right
    assert np.all(s % 10 % 10 == 1) and np.all((s // 10) % 10 == np.array([[2], [1], [0]]))


def test_coronal_slice_x_across_superior_up(vol):
    s = slice_of(vol, "coronal", 2)
    assert s.shape == (4, 2)  # rows = z, columns = x
    np.testing.assert_array_equal(s[:, 0], [23, 22, 21, 20])  # superior (z = 3) at the top
    np.testing.assert_array_equal(s[0], [23, 123])


def test_sagittal_slice_y_across_superior_up(vol):
    s = slice_of(vol, "sagittal", 1)
    assert s.shape == (4, 3)  # rows = z, columns = y
    np.testing.assert_array_equal(s[0], [103, 113, 123])  # top row z = 3, anterior on the right
    np.testing.assert_array_equal(s[:, 0], [103, 102, 101, 100])


def test_axis_names_numbers_and_bad_input(vol):
    assert [axis_index(a) for a in ("sagittal", "coronal", "axial", "Axial", 0, 2)] == [0, 1, 2, 2, 0, 2]
    np.testing.assert_array_equal(slice_of(vol, 2, 1), slice_of(vol, "axial", 1))
    with pytest.raises(ValueError):
        slice_of(vol, "oblique", 0)
    with pytest.raises(IndexError):
        slice_of(vol, "axial", 4)
    with pytest.raises(ValueError):
        slice_of(vol[0], "axial", 0)


def test_best_slice_takes_the_largest_anomaly_inside_the_brain():
    anomaly = np.zeros((6, 7, 8))
    brain = np.zeros_like(anomaly, bool)
    brain[1:5, 1:6, 1:7] = True
    anomaly[3, 2, 5] = 0.9
    anomaly[0, 0, 0] = 5.0  # outside the brain: ignored
    assert best_slice(anomaly, brain, "sagittal") == 3
    assert best_slice(anomaly, brain, "coronal") == 2
    assert best_slice(anomaly, brain, "axial") == 5
    assert best_slice(anomaly, None, "axial") == 0  # without a mask every voxel counts
    assert best_slice(anomaly, np.zeros_like(brain), "axial") == 4  # empty brain: the middle slice


def test_triptych_has_three_equal_aspect_heatmaps(vol):
    restoration, anomaly = vol * 0.5, np.abs(vol - vol * 0.5)
    s = spec(triptych_figure(vol / vol.max(), restoration / vol.max(), anomaly, "axial", 2))
    heat = [t for t in s["data"] if t["type"] == "heatmap"]
    assert len(heat) == 3
    assert [t["xaxis"] for t in heat] == ["x", "x2", "x3"]
    np.testing.assert_allclose(values(heat[2]["z"]), slice_of(anomaly, "axial", 2), rtol=1e-6)
    assert heat[0]["zmin"] == 0 and heat[0]["zmax"] == 1
    assert heat[2]["zmax"] == pytest.approx(anomaly.max())  # one colour scale for all slices
    lay = s["layout"]
    assert lay["yaxis"]["scaleanchor"] == "x" and lay["yaxis3"]["scaleanchor"] == "x3"
    assert lay["yaxis"]["autorange"] == "reversed" and lay["xaxis2"]["visible"] is False
    assert "axial slice 2 of 3" in lay["title"]["text"]


def test_overlay_hides_values_below_threshold(vol):
    zmap = np.zeros_like(vol)
    zmap[1, 1, 2], zmap[0, 2, 2], zmap[1, 0, 2] = 5.0, 3.0, 2.9
    lesion = zmap >= 3
    s = spec(overlay_figure(vol / vol.max(), zmap, "axial", 2, threshold=3.0, opacity=0.4, lesion=lesion))
    base, over = s["data"][0], s["data"][1]
    assert base["type"] == over["type"] == "heatmap"
    z = values(over["z"])
    expect = slice_of(zmap, "axial", 2)
    shown = expect >= 3
    assert shown.sum() == 2
    np.testing.assert_allclose(z[shown], expect[shown])
    assert np.isnan(z[~shown]).all()  # 2.9 and the zeros are hidden
    assert over["opacity"] == 0.4 and over["zmin"] == 3
    assert s["data"][2]["type"] == "contour" and s["data"][2]["name"] == "known lesion"
    no_lesion = spec(overlay_figure(vol, zmap, "axial", 0, threshold=3.0, lesion=lesion))
    assert len(no_lesion["data"]) == 2  # nothing of the lesion on that slice: no empty contour


def test_cohort_table_rows():
    summary = {"scan": "a", "age": 40.0, "sex": "F", "method": "kl-inpaint",
               "abnormality_index": {"top1": 2.5, "top5": 1.5}, "healthy_centile": {"top1": 90.0, "top5": 80.0},
               "latent_mask_share": 0.1, "warnings": ["w1", "w2"]}
    table = cohort_table([summary, {**summary, "scan": "b", "warnings": []}])
    assert list(table["scan"]) == ["a", "b"]
    assert table.loc[0, "centile top1"] == 90.0 and table.loc[0, "warnings"] == "w1; w2"
    assert table.loc[1, "warnings"] == ""
    assert table["index peak"].isna().all()  # a summary from before the peak index: its column stays empty
    assert table.columns[4] == "index top1"  # summaries from before the headline index lead with the top 1%
    peak = cohort_table([{**summary, "abnormality_index": {**summary["abnormality_index"], "peak": 4.0},
                          "healthy_centile": {**summary["healthy_centile"], "peak": 99.0}, "headline_index": "peak"}])
    assert peak.loc[0, "index peak"] == 4.0 and peak.loc[0, "centile peak"] == 99.0
    assert list(peak.columns[4:8]) == ["index peak", "centile peak", "index top1", "centile top1"]
    assert table["brain-age gap"].isna().all()  # a model without the brain-age read-out
    aged = cohort_table([{**summary, "brain_age": {"gap_years": 7.5, "centile": 0.9}}])
    assert aged.loc[0, "brain-age gap"] == 7.5 and aged.loc[0, "brain-age gap centile"] == 90.0


def test_most_abnormal_slice_prefers_a_cluster_over_one_extreme_voxel():
    z = np.zeros((4, 4, 8))
    z[1, 1, 2] = 9.0  # one extreme voxel on axial slice 2
    z[:3, :3, 6] = 5.0  # a 3x3 cluster at z = 5 on axial slice 6 (excess 9 x 2 = 18 > 6)
    brain = np.ones_like(z, bool)
    assert most_abnormal_slice(z, brain, "axial") == 6
    assert best_slice(z, brain, "axial") == 2
    brain[:, :, 6] = False  # outside the brain it does not count
    assert most_abnormal_slice(z, brain, "axial") == 2
    assert most_abnormal_slice(np.full_like(z, 1.0), None, "axial") == best_slice(np.full_like(z, 1.0), None, "axial")


def test_a_view_never_opens_on_the_brains_edge_slice():
    """Bug: switching the view opened on an edge slice, where a few voxels of cortex carry large z."""
    brain = np.zeros((20, 20, 20), bool)
    brain[4:16, 4:16, 4:16] = True
    brain[4:16, 4:16, 16] = False
    brain[9:11, 9:11, 16] = True  # the top slice: 4 brain voxels
    z = np.zeros(brain.shape)
    z[9:11, 9:11, 16] = 40.0  # large z at the edge (excess 4 x 37)
    z[6:9, 6:9, 10] = 6.0  # a real cluster inside (excess 9 x 3)
    assert most_abnormal_slice(z, brain, "axial") == 10


def test_native_planes_figure_shows_the_scan_voxels_at_their_aspect_with_a_crosshair():
    from normcore.imaging.native_view import Z_DISPLAY_MAX, NativeView
    from normcore.plotting.imaging import crosshair, native_planes_figure

    rng = np.random.default_rng(0)
    shape = (20, 24, 10)
    z = rng.normal(size=shape).astype(np.float32)
    z[5, 6, 4] = 50.0
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    view = NativeView(rng.random(shape).astype(np.float32), z, np.ones(shape, bool), affine)
    voxel = (5, 6, 4)
    fig = native_planes_figure(view, voxel, threshold=3.0).to_plotly_json()
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heat) == 6
    expected = {"axial": (24, 20), "coronal": (10, 20), "sagittal": (10, 24)}
    for plane, (grey, over) in zip(expected, zip(heat[::2], heat[1::2], strict=True), strict=True):
        assert values(grey["z"]).shape == expected[plane]  # the scan's own voxels, not the model grid
        zz = values(over["z"])
        assert np.all(np.isnan(zz) | (zz >= 3.0)) and over["zmax"] == Z_DISPLAY_MAX  # clipped colour scale
    assert fig["layout"]["yaxis2"]["scaleratio"] == pytest.approx(2.5)  # coronal: 2.5 mm rows, 1 mm columns
    assert crosshair(shape, "axial", voxel) == (5, 24 - 1 - 6)
    vertical = [s for s in fig["layout"]["shapes"] if s["x0"] == s["x1"]]
    assert vertical[0]["x0"] == 5 and vertical[2]["x0"] == 6  # axial and sagittal columns of the voxel
    z_axial = values(heat[1]["z"])
    assert z_axial[24 - 1 - 6, 5] == 50.0  # the extreme voxel sits under the crosshair


def test_quality_table_marks_the_failed_gates():
    from normcore.imaging.acquisition import gates

    env = {"voxel_mm_max": 1.2, "brain_coverage_min": 0.93, "template_dice_min": None, "n_scans": 9}
    table = quality_table(gates({"voxel_mm": 1.0, "brain_coverage": 0.5, "mask_source": "given"}, env))
    assert list(table.columns) == ["quality gate", "this scan", "required", "passed"]
    assert table.set_index("quality gate")["passed"].to_dict() == {"brain mask": "yes", "voxel size (mm)": "yes",
                                                                  "brain coverage": "NO"}
    assert table.set_index("quality gate").loc["brain coverage", "required"] == ">= 0.88"
