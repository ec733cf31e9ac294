"""Fixtures for the IO tests: non-identity affines and small synthetic volumes in world space."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

SHAPE = (20, 24, 16)


def _rotation_z(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation


def _affine(diagonal: tuple[float, float, float], offset: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([*diagonal, 1.0])
    affine[:3, 3] = offset
    return affine


# Every one of these is anisotropic and off the origin; they differ in axis flips.
AFFINES = {
    "ras": _affine((0.8, 1.2, 2.5), (-10.5, 20.25, -33.0)),
    "lps": _affine((-0.8, -1.2, 2.5), (12.3456, -45.6789, 7.0123)),
    "rps": _affine((0.8, -1.2, 2.5), (3.0, 17.5, -80.0)),
    "oblique": _rotation_z(20.0) @ _affine((0.9, 1.1, 3.0), (5.0, -6.0, 7.0)),
}


@pytest.fixture(params=sorted(AFFINES))
def affine(request: pytest.FixtureRequest) -> np.ndarray:
    """A non-identity affine (flips, anisotropic spacing, offset; one oblique)."""
    return AFFINES[request.param].copy()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def volume_array(rng: np.random.Generator) -> np.ndarray:
    """Random float32 values of shape (20, 24, 16), every voxel different."""
    return rng.normal(100.0, 30.0, size=SHAPE).astype(np.float32)


def world_coordinates(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World (RAS, mm) coordinates of every voxel centre, shape (3, X, Y, Z)."""
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ index + affine[:3, 3:4]
    return world.reshape(3, *shape)


@pytest.fixture
def make_sphere() -> Callable[..., np.ndarray]:
    """``make_sphere(shape, affine, centre, radius)``: binary float32 ball drawn in world mm."""

    def sphere(
        shape: tuple[int, int, int],
        affine: np.ndarray,
        centre: tuple[float, float, float],
        radius: float,
    ) -> np.ndarray:
        world = world_coordinates(shape, affine)
        distance = np.sqrt(sum((world[i] - centre[i]) ** 2 for i in range(3)))
        return (distance <= radius).astype(np.float32)

    return sphere


@pytest.fixture
def make_blob() -> Callable[..., np.ndarray]:
    """``make_blob(shape, affine, centre, sigma)``: smooth Gaussian intensity drawn in world mm."""

    def blob(
        shape: tuple[int, int, int],
        affine: np.ndarray,
        centre: tuple[float, float, float],
        sigma: float,
    ) -> np.ndarray:
        world = world_coordinates(shape, affine)
        squared = sum((world[i] - centre[i]) ** 2 for i in range(3))
        return np.exp(-squared / (2 * sigma**2)).astype(np.float32)

    return blob
