"""A small phantom seen on any grid, known transforms and Dice: the data of the registration tests
(also used by ``tests/io/test_alignment_deformable.py``). Phantoms are <= 40^3, seconds each."""

from __future__ import annotations

import numpy as np

from medverse.io.volume import Volume

SIZE = 40
GRID = np.eye(4)
GRID[:3, 3] = -(SIZE - 1) / 2  # 1 mm voxels centred on the world origin


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def phantom(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, organ mask) at world points (3, ...): a body with three inner structures."""
    x, y, z = points

    def inside(centre: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
        r = sum(((c - c0) / rr) ** 2 for c, c0, rr in zip((x, y, z), centre, radii))
        return 1.0 - np.sqrt(r)

    body = _sigmoid(6 * inside((0, 0, 0), (13, 11, 12)))
    organ = inside((4, -2, 2), (5, 6, 4))
    other = _sigmoid(6 * inside((-5, 4, -2), (3, 3, 4.5)))
    third = _sigmoid(6 * inside((2, 5, -5), (3, 2.5, 2.5)))
    image = 0.4 * body + 0.5 * _sigmoid(6 * organ) + 0.3 * other + 0.25 * third
    return image.astype(np.float32), (organ >= 0).astype(np.float32)


def world_points(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:4]).reshape(3, *shape)


def subject(
    affine: np.ndarray = GRID,
    shape: tuple[int, int, int] = (SIZE,) * 3,
    warp: object = None,
    name: str = "subject.nii.gz",
) -> tuple[Volume, np.ndarray]:
    """The phantom seen on a grid; ``warp`` maps that grid's world points to phantom points."""
    points = world_points(shape, affine)
    if warp is not None:
        points = warp(points)  # type: ignore[operator]
    image, mask = phantom(points)
    return Volume(image, affine, name=name), mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    cx, cy, cz = np.cos(np.deg2rad(degrees))
    sx, sy, sz = np.sin(np.deg2rad(degrees))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def known_transform() -> np.ndarray:
    """Phantom world -> moving subject world: 6-8 degree rotations, 5 % scale, a shift."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation((6.0, -4.0, 8.0)) @ np.diag([1.05, 0.97, 1.0])
    matrix[:3, 3] = (3.0, -2.5, 1.5)
    return matrix


def smooth_deformation(points: np.ndarray) -> np.ndarray:
    """A smooth non-linear displacement (up to ~3 mm) of world points."""
    x, y, z = points
    bump = np.exp(-((x - 4) ** 2 + (y + 2) ** 2 + (z - 2) ** 2) / (2 * 6.0**2))
    return np.stack([x + 3.0 * bump, y - 2.5 * bump, z + 2.0 * np.sin(x / 8.0)])
