"""The images the engines register: normalised, block-averaged copies, and world conventions.

Shared by both engines (:mod:`medverse.registration.sitk_engine`,
:mod:`medverse.registration.ants_engine`): percentile clipping and min-max scaling (:func:`medverse.intensity.normalize_intensity`), block
averaging to a coarser grid, the LPS (ITK/ANTs) to RAS conversion of an affine, and the mask of
fixed voxels that the moving volume covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from medverse.intensity import normalize_intensity
from medverse.registration.settings import RegistrationSettings
from medverse.registration.transform import resample_to_grid

if TYPE_CHECKING:
    from medverse.io.volume import Volume

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK/ANTs are LPS, our affines RAS; self-inverse
_CLIP = (0.5, 99.5)  # percentile clipping before registration


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))


def _block_average(
    array: np.ndarray, affine: np.ndarray, factors: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Average blocks of ``factors`` voxels (the remainder at the far edge is dropped)."""
    factors = [max(1, min(int(f), n)) for f, n in zip(factors, array.shape)]
    if factors == [1, 1, 1]:
        return np.asarray(array, dtype=np.float32), np.asarray(affine, dtype=np.float64)
    sizes = [n // f for n, f in zip(array.shape, factors)]
    cropped = array[: sizes[0] * factors[0], : sizes[1] * factors[1], : sizes[2] * factors[2]]
    blocks = cropped.reshape(sizes[0], factors[0], sizes[1], factors[1], sizes[2], factors[2])
    averaged = blocks.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    scale[:3, 3] = (np.asarray(factors, dtype=np.float64) - 1) / 2
    return averaged, np.asarray(affine, dtype=np.float64) @ scale


def _registration_grids(
    fixed: Volume, moving: Volume, settings: RegistrationSettings
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Normalised, block-averaged copies of both images: ``((fixed, affine), (moving, affine))``.

    The fixed copy has at most ``settings.grid_voxels`` voxels; the moving image is averaged
    to about the fixed copy's smallest voxel size.
    """
    factor = 1
    while np.prod([max(1, n // factor) for n in fixed.shape]) > settings.grid_voxels:
        factor += 1
    fixed_array = normalize_intensity(fixed.array, clip_percentiles=_CLIP, name=fixed.name)
    fixed_small = _block_average(fixed_array, fixed.affine, [factor] * 3)
    size = float(_spacing(fixed_small[1]).min())
    moving_factors = [max(1, int(round(size / s))) for s in _spacing(moving.affine)]
    moving_array = normalize_intensity(moving.array, clip_percentiles=_CLIP, name=moving.name)
    moving_small = _block_average(moving_array, moving.affine, moving_factors)
    return fixed_small, moving_small


def _lps_world_to_ras(
    matrix: np.ndarray, center: np.ndarray, translation: np.ndarray
) -> np.ndarray:
    """ITK/ANTs affine ``x_moving = A (x - c) + c + t`` (LPS) -> one 4x4 RAS matrix."""
    world_lps = np.eye(4)
    world_lps[:3, :3] = matrix
    world_lps[:3, 3] = translation + center - matrix @ center
    return _LPS_TO_RAS @ world_lps @ _LPS_TO_RAS


def _overlap_mask(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    shape: Sequence[int],
    affine: np.ndarray,
    world: np.ndarray,
) -> np.ndarray | None:
    """Fixed-grid voxels whose affine image lies inside the moving volume, 2 voxels in from its
    edge (a context with a smaller field of view must not pull the deformation at its border);
    ``None`` when that is every voxel, or too few voxels to mean anything."""
    inside, coverage = resample_to_grid(
        np.ones(moving.shape, dtype=np.float32), moving_affine, shape, affine, "nearest", world
    )
    if coverage >= 1.0:
        return None
    mask = ndimage.binary_erosion(inside > 0.5, iterations=2, border_value=1)
    if mask.all() or mask.mean() < 0.05:
        return None
    return mask.astype(np.float32)
