"""Known-answer tests of the imaging restoration and detection metrics."""

from __future__ import annotations

import numpy as np
import pytest

from normcore._utils.errors import InputError
from normcore.metrics.imaging import best_dice, dice, mae, psnr, ssim3d, subject_auc, voxel_auprc


@pytest.fixture
def vol() -> np.ndarray:
    return np.random.default_rng(0).random((12, 14, 10))


def test_identical_images(vol):
    assert mae(vol, vol) == 0.0
    assert psnr(vol, vol) == float("inf")
    assert ssim3d(vol, vol) == pytest.approx(1.0, abs=1e-12)


def test_mae_psnr_hand_computed():
    a = np.zeros((4, 4, 4))
    b = np.full((4, 4, 4), 0.1)
    assert mae(a, b) == pytest.approx(0.1)
    assert psnr(a, b) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert psnr(a, b, data_range=2.0) == pytest.approx(20.0 + 20 * np.log10(2))
    # The mask restricts the comparison: the error outside it is ignored.
    b[:2] = 0.5
    mask = np.zeros(a.shape, bool)
    mask[2:] = True
    assert mae(a, b, mask) == pytest.approx(0.1)
    assert mae(a, b) == pytest.approx((0.5 + 0.1) / 2)
    assert psnr(a, b, mask) == pytest.approx(20.0)


def test_mask_broadcasts_over_a_batch():
    a = np.zeros((3, 4, 4, 4))
    b = np.ones((3, 4, 4, 4))
    b[:, 0] = 5.0
    mask = np.ones((4, 4, 4), bool)
    mask[0] = False
    assert mae(a, b, mask) == pytest.approx(1.0)
    with pytest.raises(InputError):
        mae(a, b, np.ones((5, 4, 4), bool))
    with pytest.raises(InputError):
        mae(a, b[0])


def test_ssim_constant_images_luminance_term():
    a, b = np.full((8, 8, 8), 0.5), np.full((8, 8, 8), 0.25)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.25 + c1) / (0.5 ** 2 + 0.25 ** 2 + c1)  # variances and covariance are 0
    assert ssim3d(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_an_explicit_gaussian_window():
    rng = np.random.default_rng(1)
    a = rng.random((15, 15, 15))
    b = 0.7 * a + 0.3 * rng.random(a.shape)
    sigma, radius = 1.5, 5  # truncate 3.5 -> an 11-voxel window
    x = np.arange(-radius, radius + 1)
    k1 = np.exp(-x ** 2 / (2 * sigma ** 2))
    k1 /= k1.sum()
    w = k1[:, None, None] * k1[None, :, None] * k1[None, None, :]
    pa, pb = a[2:13, 2:13, 2:13], b[2:13, 2:13, 2:13]  # the window around the centre voxel (7, 7, 7)
    mu_a, mu_b = (w * pa).sum(), (w * pb).sum()
    var_a, var_b = (w * pa ** 2).sum() - mu_a ** 2, (w * pb ** 2).sum() - mu_b ** 2
    cov = (w * pa * pb).sum() - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    mask = np.zeros(a.shape, bool)
    mask[7, 7, 7] = True
    assert ssim3d(a, b, mask) == pytest.approx(expected, rel=1e-9)
    # Symmetric, below 1 for a degraded copy, and decreasing with more degradation.
    assert ssim3d(a, b) == pytest.approx(ssim3d(b, a))
    worse = 0.3 * a + 0.7 * rng.random(a.shape)
    assert ssim3d(a, worse) < ssim3d(a, b) < 1.0
    with pytest.raises(InputError):
        ssim3d(a[None], b[None])


def test_dice_known_overlaps():
    a = np.zeros(20, bool)
    b = np.zeros(20, bool)
    a[:10] = True
    b[5:15] = True
    assert dice(a, b) == pytest.approx(0.5)  # 2 * 5 / (10 + 10)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros(5, bool), np.zeros(5, bool)) == 1.0
    c = np.zeros(20, bool)
    c[:2] = True
    assert dice(a, c) == pytest.approx(2 * 2 / 12)


def test_voxel_auprc_perfect_and_random():
    rng = np.random.default_rng(2)
    truth = rng.random((2, 40, 50, 50)) < 0.1  # pooled over a "batch" of two subjects
    assert voxel_auprc(truth.astype(float), truth) == pytest.approx(1.0)
    assert voxel_auprc(truth + 0.1 * rng.random(truth.shape), truth) == pytest.approx(1.0)
    random_ap = voxel_auprc(rng.random(truth.shape), truth)
    assert random_ap == pytest.approx(truth.mean(), abs=0.01)
    # Inside a mask holding only positives and negatives of a known layout.
    mask = np.zeros(truth.shape, bool)
    mask[0] = True
    assert voxel_auprc(truth.astype(float), truth, mask) == pytest.approx(1.0)
    assert np.isnan(voxel_auprc(rng.random(10), np.zeros(10, bool)))
    with pytest.raises(InputError):
        voxel_auprc(np.full(4, np.nan), np.ones(4, bool))


def test_best_dice_finds_the_perfect_threshold():
    rng = np.random.default_rng(3)
    truth = rng.random((20, 20, 20)) < 0.05
    scores = np.where(truth, 0.8, 0.2) + 0.1 * rng.random(truth.shape)  # positives in [0.8, 0.9), rest [0.2, 0.3)
    d, thr = best_dice(scores, truth)
    assert d == pytest.approx(1.0)
    assert 0.3 <= thr <= 0.8
    assert dice(scores >= thr, truth) == pytest.approx(1.0)
    d_exact, thr_exact = best_dice(scores, truth, n_thresholds=None)
    assert d_exact == pytest.approx(1.0) and 0.3 <= thr_exact <= scores[truth].min()
    assert np.isnan(best_dice(scores, np.zeros_like(truth))[0])


def test_best_dice_matches_a_threshold_loop():
    rng = np.random.default_rng(4)
    truth = rng.random(3000) < 0.1
    scores = truth * 0.5 + rng.random(3000)
    mask = rng.random(3000) < 0.8
    d, thr = best_dice(scores, truth, mask, n_thresholds=37)
    s, t = scores[mask], truth[mask]
    grid = np.linspace(s.min(), s.max(), 37)
    loop = np.array([dice(s >= g, t) for g in grid])
    assert d == pytest.approx(loop.max())
    assert thr == pytest.approx(grid[np.argmax(loop)])
    d_all, thr_all = best_dice(scores, truth, mask, n_thresholds=None)
    loop_all = max(dice(s >= g, t) for g in np.unique(s))
    assert d_all == pytest.approx(loop_all) and d_all >= d
    assert dice(s >= thr_all, t) == pytest.approx(d_all)


def test_subject_auc():
    labels = np.array([0, 0, 0, 1, 1])
    assert subject_auc([0.1, 0.2, 0.3, 0.8, 0.9], labels) == pytest.approx(1.0)
    assert subject_auc([0.9, 0.8, 0.7, 0.1, 0.2], labels) == pytest.approx(0.0)
    assert subject_auc(np.ones(5), labels) == pytest.approx(0.5)
    assert subject_auc([0.1, 0.5, 0.3, 0.4, 0.9], labels) == pytest.approx(5 / 6)  # 5 of 6 pairs ordered
    with pytest.raises(InputError):
        subject_auc([0.1, 0.2], [1, 1])
    with pytest.raises(InputError):
        subject_auc([0.1, 0.2, 0.3], [0, 1])
