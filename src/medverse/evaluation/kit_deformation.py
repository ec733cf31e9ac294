"""The kit's deformation model: a random affine composed with Gaussian radial-basis displacements.

Deliberately a different construction from the training augmentation (elastic B-spline/grid
transforms in :mod:`medverse.data.augment`). The parameters are drawn as JSON-safe lists (they go
into the kit's ``dataset.json``); the pullback maps subject points (mm) to template points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from medverse.data.mni import HEAD_CENTRE_MM

if TYPE_CHECKING:
    from medverse.evaluation.kit_config import KitConfig


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _draw_deformation(config: KitConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Random affine + radial-basis field, as JSON-safe parameters (pull-back, subject -> template)."""
    angles = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg, 3)
    scales = rng.uniform(1 - config.max_scaling, 1 + config.max_scaling, 3)
    translation = rng.uniform(-config.max_translation_mm, config.max_translation_mm, 3)
    num_rbf = int(rng.integers(config.num_rbf[0], config.num_rbf[1] + 1))
    # Kernel centres inside the brain's bounding box (MNI mm), widths and displacement vectors.
    centres = rng.uniform((-70.0, -105.0, -60.0), (70.0, 70.0, 80.0), (num_rbf, 3))
    widths = rng.uniform(config.rbf_width_mm[0], config.rbf_width_mm[1], num_rbf)
    vectors = rng.normal(0.0, config.rbf_amplitude_mm, (num_rbf, 3))
    return {
        "rotation_deg": angles.tolist(),
        "scales": scales.tolist(),
        "translation_mm": translation.tolist(),
        "rbf_centres_mm": centres.tolist(),
        "rbf_widths_mm": widths.tolist(),
        "rbf_vectors_mm": vectors.tolist(),
    }


def _displacement(points: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Sum of Gaussian radial-basis displacements at ``points`` ``(3, N)`` in mm -> ``(3, N)``."""
    field_mm = np.zeros_like(points)
    for centre, width, vector in zip(
        params["rbf_centres_mm"], params["rbf_widths_mm"], params["rbf_vectors_mm"], strict=True
    ):
        offset = points - np.asarray(centre, dtype=points.dtype)[:, None]
        weight = np.exp(-np.sum(offset * offset, axis=0) / (2.0 * width * width))
        field_mm += np.asarray(vector, dtype=points.dtype)[:, None] * weight[None]
    return field_mm


def _pullback(points: np.ndarray, params: Mapping[str, Any], rbf_scale: float) -> np.ndarray:
    centre = np.asarray(HEAD_CENTRE_MM, dtype=np.float64)[:, None]
    matrix = _rotation(np.asarray(params["rotation_deg"])) @ np.diag(params["scales"])
    moved = matrix @ (points - centre) + centre + np.asarray(params["translation_mm"])[:, None]
    return moved + rbf_scale * _displacement(points, params)


def _min_jacobian(params: Mapping[str, Any], rbf_scale: float) -> float:
    # Jacobian determinant on a coarse 6 mm lattice over the head, by central differences.
    axes = [np.arange(-84.0, 85.0, 6.0), np.arange(-120.0, 87.0, 6.0), np.arange(-72.0, 97.0, 6.0)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    step = 0.5
    columns = []
    for axis in range(3):
        delta = np.zeros((3, 1))
        delta[axis] = step
        columns.append(
            (
                _pullback(grid + delta, params, rbf_scale)
                - _pullback(grid - delta, params, rbf_scale)
            )
            / (2 * step)
        )
    jacobian = np.stack(columns, axis=-1).transpose(1, 0, 2)  # (N, 3, 3)
    return float(np.linalg.det(jacobian).min())
