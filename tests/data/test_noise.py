"""Smooth random noise (Perlin) for synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from medverse.data.noise import perlin_noise

SHAPE = (32, 32, 32)


def test_perlin_noise_is_smooth_and_bounded() -> None:
    noise = perlin_noise(SHAPE, cells=2, octaves=1, rng=np.random.default_rng(0))
    assert noise.shape == SHAPE and np.abs(noise).max() == pytest.approx(1.0)
    white = np.random.default_rng(0).uniform(-1, 1, SHAPE)
    # neighbouring voxels are strongly correlated, unlike white noise
    assert np.abs(np.diff(noise, axis=0)).mean() < 0.2 * np.abs(np.diff(white, axis=0)).mean()
