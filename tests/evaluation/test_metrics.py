"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medverse.errors import InputError
from medverse.evaluation.metrics import (
    REASON_BOTH_EMPTY,
    REASON_PREDICTION_EMPTY,
    REASON_REFERENCE_EMPTY,
    dice,
    empty_reason,
    hd95,
    mae,
    nsd,
    psnr,
    score_image,
    score_segmentation,
    ssim,
)


def cube(shape=(20, 20, 20), start=(2, 2, 2), size=10) -> np.ndarray:
    mask = np.zeros(shape, bool)
    x, y, z = start
    mask[x : x + size, y : y + size, z : z + size] = True
    return mask


def points(*coords, shape=(10, 10, 10)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for coord in coords:
        mask[coord] = True
    return mask


def test_dice_of_shifted_cubes():
    # 10^3 cubes shifted by 5 voxels along x overlap in 5*10*10 = 500 voxels: 2*500 / 2000 = 0.5.
    assert dice(cube(), cube(start=(7, 2, 2))) == pytest.approx(0.5)
    # Shifted by 2 along x and 2 along y: overlap 8*8*10 = 640 -> 0.64.
    assert dice(cube(), cube(start=(4, 4, 2))) == pytest.approx(0.64)
    assert dice(cube(), cube()) == 1.0


def test_dice_thresholds_probabilities_and_accepts_tensors():
    probabilities = cube().astype(np.float32) * 0.7 + 0.2  # 0.9 inside, 0.2 outside
    assert dice(probabilities, cube()) == 1.0
    assert dice(torch.from_numpy(cube()), torch.from_numpy(cube(start=(7, 2, 2)))) == pytest.approx(
        0.5
    )


def test_hd95_with_anisotropic_spacing_hand_computed():
    # Reference: one voxel. Prediction: that voxel plus one 4 voxels away along z.
    # With spacing (1, 1, 2) mm the prediction->reference distances are {0, 8} mm; the 95th
    # percentile with linear interpolation is 0.95 * 8 = 7.6; reference->prediction is {0}.
    reference = points((2, 2, 2))
    prediction = points((2, 2, 2), (2, 2, 6))
    assert hd95(prediction, reference, (1.0, 1.0, 2.0)) == pytest.approx(7.6, abs=1e-5)
    assert hd95(reference, prediction, (1.0, 1.0, 2.0)) == pytest.approx(7.6, abs=1e-5)  # symmetric


def test_hd95_spacing_follows_array_axes():
    reference, prediction = points((2, 2, 2)), points((5, 2, 2))  # 3 voxels apart along axis 0
    assert hd95(prediction, reference, (3.0, 1.0, 1.0)) == pytest.approx(9.0)
    assert hd95(prediction, reference, (1.0, 1.0, 3.0)) == pytest.approx(3.0)
    assert hd95(prediction, reference, 2.0) == pytest.approx(6.0)


def test_nsd_simple_cases():
    reference = points((2, 2, 2), (2, 2, 6))
    prediction = points((2, 2, 2))
    # Prediction surface (1 point) all within 1 mm; reference surface: 1 of 2 points within 1 mm.
    assert nsd(prediction, reference, 1.0, tolerance_mm=1.0) == pytest.approx(2 / 3, abs=1e-6)
    # Single voxels 6 mm apart: nothing within 1 mm, everything within 7 mm.
    far = points((2, 2, 5))
    assert nsd(far, points((2, 2, 2)), (1.0, 1.0, 2.0), tolerance_mm=1.0) == 0.0
    assert nsd(far, points((2, 2, 2)), (1.0, 1.0, 2.0), tolerance_mm=7.0) == 1.0
    assert nsd(cube(), cube(), 1.0) == 1.0


@pytest.mark.parametrize(
    ("pred_empty", "ref_empty", "reason", "expected"),
    [
        # (prediction empty, reference empty, reason, (dice, hd95, nsd)); None means NaN
        (False, True, REASON_REFERENCE_EMPTY, (None, None, None)),
        (True, True, REASON_BOTH_EMPTY, (None, None, None)),
        (True, False, REASON_PREDICTION_EMPTY, (0.0, None, 0.0)),
    ],
)
def test_empty_masks_give_nan_or_zero_with_a_named_reason(pred_empty, ref_empty, reason, expected):
    empty = np.zeros((20, 20, 20), bool)
    prediction = empty if pred_empty else cube()
    reference = empty if ref_empty else cube()
    scores = score_segmentation(prediction, reference, (1.0, 1.0, 1.0))
    assert scores["reason"] == reason == empty_reason(prediction, reference)
    for name, value in zip(("dice", "hd95", "nsd"), expected, strict=True):
        if value is None:
            assert math.isnan(scores[name]), name
        else:
            assert scores[name] == value, name


def test_nonempty_masks_have_no_reason():
    assert score_segmentation(cube(), cube(start=(3, 2, 2)), 1.0)["reason"] == ""


def test_psnr_of_known_gaussian_noise():
    rng = np.random.default_rng(0)
    reference = rng.random((32, 32, 32))
    sigma = 0.05
    noisy = reference + rng.normal(0.0, sigma, reference.shape)
    # Expected 10 log10(1 / sigma^2) = 26.02 dB; the sample MSE of 32768 voxels is within ~1 %.
    assert psnr(noisy, reference, 1.0) == pytest.approx(20 * math.log10(1 / sigma), abs=0.1)
    exact = 10 * math.log10(1.0 / np.mean((noisy - reference) ** 2))
    assert psnr(noisy, reference, 1.0) == pytest.approx(exact, abs=1e-6)
    # Doubling the data range adds 20 log10(2) = 6.02 dB.
    assert psnr(noisy, reference, 2.0) - psnr(noisy, reference, 1.0) == pytest.approx(
        6.0206, abs=1e-3
    )


def test_ssim_mae_and_score_image():
    rng = np.random.default_rng(1)
    reference = rng.random((16, 16, 16))
    assert ssim(reference, reference, 1.0) == pytest.approx(1.0, abs=1e-6)
    noisy = reference + rng.normal(0.0, 0.2, reference.shape)
    assert ssim(noisy, reference, 1.0) < 0.9
    assert mae(reference + 0.25, reference) == pytest.approx(0.25)
    # Thin volumes shrink the window instead of failing.
    thin = reference[:5, :7, :16]
    assert ssim(thin, thin, 1.0) == pytest.approx(1.0, abs=1e-6)
    scores = score_image(noisy, reference, 1.0)
    assert set(scores) == {"psnr", "ssim", "mae", "reason"} and scores["reason"] == ""
    bad = noisy.copy()
    bad[0, 0, 0] = np.nan
    scores = score_image(bad, reference, 1.0)
    assert math.isnan(scores["psnr"]) and scores["reason"].startswith("prediction has NaN")


@pytest.mark.parametrize("shape", [(16, 16, 16), (20, 13, 9), (5, 7, 16)])
def test_separable_ssim_equals_monai_ssim_metric(shape):
    # The default path runs MONAI's Gaussian window as three 1-D passes; same numbers (float32).
    rng = np.random.default_rng(2)
    reference = rng.random(shape)
    prediction = reference + rng.normal(0.0, 0.2, shape)
    fast = ssim(prediction, reference, 1.5)
    assert fast == pytest.approx(ssim(prediction, reference, 1.5, use_monai=True), abs=2e-6)


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="differs from reference shape"):
        dice(cube(), cube(shape=(20, 20, 21)))
    with pytest.raises(InputError, match="spacing"):
        hd95(cube(), cube(), (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="data_range"):
        psnr(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), 0.0)
    with pytest.raises(InputError, match="3-D"):
        dice(np.zeros((4, 4)), np.zeros((4, 4)))
