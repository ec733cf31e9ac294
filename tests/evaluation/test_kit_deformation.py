"""``evaluation/kit_deformation.py``: the kit's random affine + radial-basis deformation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medverse.data.mni import HEAD_CENTRE_MM
from medverse.evaluation.kit_config import KitConfig
from medverse.evaluation.kit_deformation import (
    _displacement,
    _draw_deformation,
    _min_jacobian,
    _pullback,
    _rotation,
)


def _identity() -> dict:
    return {
        "rotation_deg": [0.0, 0.0, 0.0], "scales": [1.0, 1.0, 1.0], "translation_mm": [0.0] * 3,
        "rbf_centres_mm": [[0.0, 0.0, 0.0]], "rbf_widths_mm": [20.0], "rbf_vectors_mm": [[0.0] * 3],
    }  # fmt: skip


def test_rotation_is_orthonormal_and_turns_about_the_named_axes() -> None:
    for angles in ([0, 0, 0], [10, -5, 30], [90, 0, 0]):
        matrix = _rotation(np.asarray(angles, dtype=float))
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(matrix) == pytest.approx(1.0)
    np.testing.assert_allclose(
        _rotation(np.array([0.0, 0.0, 90.0])) @ [1, 0, 0], [0, 1, 0], atol=1e-12
    )


def test_draw_is_seeded_json_safe_and_within_the_config() -> None:
    config = KitConfig()
    first = _draw_deformation(config, np.random.default_rng(3))
    assert first == _draw_deformation(config, np.random.default_rng(3))
    assert first != _draw_deformation(config, np.random.default_rng(4))
    assert json.loads(json.dumps(first)) == first
    assert all(abs(a) <= config.max_rotation_deg for a in first["rotation_deg"])
    assert all(abs(s - 1) <= config.max_scaling for s in first["scales"])
    low, high = config.num_rbf
    assert low <= len(first["rbf_centres_mm"]) == len(first["rbf_widths_mm"]) <= high


def test_displacement_is_the_sum_of_gaussian_bumps() -> None:
    params = _identity() | {"rbf_vectors_mm": [[2.0, 0.0, -1.0]], "rbf_widths_mm": [10.0]}
    points = np.array([[0.0, 10.0, 1000.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    field = _displacement(points, params)
    np.testing.assert_allclose(field[:, 0], [2.0, 0.0, -1.0])
    np.testing.assert_allclose(field[:, 1], np.array([2.0, 0.0, -1.0]) * np.exp(-0.5))
    np.testing.assert_allclose(field[:, 2], 0.0, atol=1e-12)


def test_pullback_is_the_affine_about_the_head_centre_plus_the_scaled_field() -> None:
    points = np.random.default_rng(0).uniform(-80, 80, (3, 50))
    np.testing.assert_allclose(_pullback(points, _identity(), 1.0), points)
    params = _identity() | {"translation_mm": [1.0, 2.0, 3.0], "scales": [2.0, 1.0, 1.0]}
    centre = np.asarray(HEAD_CENTRE_MM, dtype=float)
    moved = _pullback(centre[:, None], params, 1.0)[:, 0]
    np.testing.assert_allclose(moved, centre + [1.0, 2.0, 3.0])  # the centre only moves by t
    bump = _identity() | {"rbf_vectors_mm": [[4.0, 0.0, 0.0]]}
    origin = np.zeros((3, 1))
    np.testing.assert_allclose(_pullback(origin, bump, 0.25)[:, 0], [1.0, 0.0, 0.0])


def test_min_jacobian_sees_scaling_and_folding() -> None:
    assert _min_jacobian(_identity(), 1.0) == pytest.approx(1.0)
    assert _min_jacobian(_identity() | {"scales": [2.0, 1.0, 0.5]}, 1.0) == pytest.approx(1.0)
    assert _min_jacobian(_identity() | {"scales": [2.0, 2.0, 1.0]}, 1.0) == pytest.approx(4.0)
    folding = _identity() | {"rbf_vectors_mm": [[-60.0, 0.0, 0.0]], "rbf_widths_mm": [8.0]}
    assert _min_jacobian(folding, 1.0) < 0 < _min_jacobian(folding, 0.05)
