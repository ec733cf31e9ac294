"""Tests for medverse.intensity: min-max scaling of inputs (checked) and of training data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medverse.errors import InputError
from medverse.intensity import minmax_scale, normalize_intensity


def test_normalize_min_max() -> None:
    array = np.array([[-1000.0, 0.0], [500.0, 1000.0]])
    result = normalize_intensity(array)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, [[0.0, 0.5], [0.75, 1.0]], atol=1e-7)
    assert array[0, 0] == -1000.0  # input untouched
    np.testing.assert_allclose(normalize_intensity(torch.tensor(array)), result)


def test_normalize_clips_percentiles_first() -> None:
    array = np.arange(101, dtype=np.float64)
    array[100] = 1e6  # one hot outlier
    assert normalize_intensity(array)[50] < 1e-4  # the outlier squashes everything
    clipped = normalize_intensity(array, clip_percentiles=(0.0, 99.0))
    assert clipped[50] == pytest.approx(50 / 99, abs=1e-6)
    assert clipped[100] == 1.0 and clipped[0] == 0.0


def test_normalize_constant_gives_zeros_not_nan() -> None:
    result = normalize_intensity(np.full((3, 3, 3), 5.0))
    np.testing.assert_array_equal(result, np.zeros((3, 3, 3), np.float32))


@pytest.mark.parametrize("percentiles", [(99.5, 0.5), (-1.0, 50.0), (0.0, 101.0), (1.0,)])
def test_normalize_refuses_bad_percentiles(percentiles: tuple[float, ...]) -> None:
    with pytest.raises(InputError, match="clip_percentiles"):
        normalize_intensity(np.arange(10.0), clip_percentiles=percentiles)  # type: ignore[arg-type]


def test_normalize_refuses_nan() -> None:
    with pytest.raises(InputError, match="'ct': expected finite values, got 1 NaN"):
        normalize_intensity(np.array([0.0, np.nan, 1.0]), name="ct")


def test_minmax_scale_known_answer() -> None:
    volume = np.array([[-1.0, 0.0], [1.0, 3.0]])
    result = minmax_scale(volume)
    assert result.dtype == np.float32 and result.shape == (2, 2)
    np.testing.assert_allclose(result, [[0.0, 0.25], [0.5, 1.0]], rtol=1e-6)
    assert volume[0, 0] == -1.0  # input untouched
    np.testing.assert_array_equal(minmax_scale(np.full((2, 3), 7.0)), np.zeros((2, 3), np.float32))


def test_minmax_scale_adds_its_epsilon_to_the_range() -> None:
    # the one difference from normalize_intensity (which divides by max(range, 1e-8)): the range
    # plus 1e-8, so a range of 1e-8 scales to 1/2, not 1. Training data keeps these numbers.
    volume = np.array([0.0, 1e-8])
    np.testing.assert_allclose(minmax_scale(volume), [0.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(normalize_intensity(volume), [0.0, 1.0], rtol=1e-6)
