"""The result of a registration and how it moves arrays from the moving grid to the fixed grid.

A :class:`Registration` is a world-space affine (``world``: fixed world point -> moving world
point, RAS mm) and, for deformable registrations, a displacement field ``u`` (RAS mm, defined on
the fixed side) so that a fixed point ``x`` maps to ``world @ (x + u(x))``.
:meth:`Registration.warp` resamples any array on the moving grid onto the fixed grid with it
(numpy/scipy, no engine needed), so a cached result is all that is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medverse.errors import InputError
from medverse.validation import check_option, format_shape

__all__ = ["Registration", "resample_to_grid"]

# Adult heads differ in size by well under 25 %; same-anatomy kit registrations scale by
# 0.93-1.07, while a context of another body part scaled by 0.34-0.91 and an inverted-contrast
# one by 0.61-0.88 (both "succeeded"). Outside this range the result is kept but doubted.
_PLAUSIBLE_SCALE = (0.75, 1.33)
_WARP_CHUNK = 2_000_000  # fixed voxels mapped at once by a deformable warp (~100 MB temporaries)


@dataclass(eq=False)
class Registration:
    """A transform from a fixed grid to a moving grid; :meth:`warp` applies it.

    Attributes:
        kind: ``"affine"`` or ``"deformable"``.
        engine: ``"ants"`` or ``"sitk"``.
        fixed_shape, fixed_affine: the grid results are sampled on (RAS, mm).
        moving_shape, moving_affine: the grid the warped arrays live on.
        world: 4x4 map from fixed world points to moving world points (RAS, mm), applied after
            the displacement.
        field: ``(3, X', Y', Z')`` float32 displacement (RAS, mm) on ``field_affine``'s grid, or
            ``None`` for an affine registration.
        field_affine: voxel-to-world affine of ``field``'s grid (a coarse copy of the fixed
            grid).
        seconds: time spent registering (0 when read from the cache).
        cached: whether the result came from a
            :class:`~medverse.registration.cache.RegistrationCache`.
        moving_name, fixed_name: for messages.
        key: the cache key of this registration.
    """

    kind: str
    engine: str
    fixed_shape: tuple[int, int, int]
    fixed_affine: np.ndarray
    moving_shape: tuple[int, int, int]
    moving_affine: np.ndarray
    world: np.ndarray
    field: np.ndarray | None = None
    field_affine: np.ndarray | None = None
    seconds: float = 0.0
    cached: bool = False
    moving_name: str = "moving"
    fixed_name: str = "fixed"
    key: str = ""

    def __post_init__(self) -> None:
        self.fixed_shape = tuple(int(s) for s in self.fixed_shape)  # type: ignore[assignment]
        self.moving_shape = tuple(int(s) for s in self.moving_shape)  # type: ignore[assignment]
        self._coverage: float | None = None

    def warp(self, moving_array: Any, *, interpolation: str = "linear") -> np.ndarray:
        """Resample an array on the moving grid onto the fixed grid.

        Points within half a voxel of the moving volume's edge take the edge value; points
        further out become 0.

        Args:
            moving_array: ``(X, Y, Z)`` on the moving volume's grid (its image, mask, ...), or
                ``(N, X, Y, Z)``: N arrays warped with one computation of the mapping.
            interpolation: ``"linear"`` (images) or ``"nearest"`` (masks, label maps).

        Returns:
            Float32 array of the fixed grid's shape (with the leading ``N`` of a stack).

        Raises:
            InputError: the array is not on the moving grid, or an unknown interpolation.
        """
        interpolation = check_option(interpolation, ("linear", "nearest"), "interpolation")
        data = np.asarray(moving_array, dtype=np.float32)
        if data.shape[-3:] != self.moving_shape or data.ndim not in (3, 4):
            raise InputError(
                f"'{self.moving_name}': cannot warp an array of shape {data.shape}; the "
                f"registration expects the moving grid {format_shape(self.moving_shape)}"
            )
        stack = data if data.ndim == 4 else data[None]
        values, coverage = self._map(stack, 1 if interpolation == "linear" else 0)
        self._coverage = coverage
        assert values is not None
        return values if data.ndim == 4 else values[0]

    @property
    def coverage(self) -> float:
        """Fraction of fixed voxels that land inside the moving volume."""
        if self._coverage is None:
            _, self._coverage = self._map(None, 0)
        return self._coverage

    @property
    def max_displacement(self) -> float:
        """Largest displacement of the deformable stage in mm (0 for an affine registration)."""
        if self.field is None:
            return 0.0
        return float(np.sqrt((self.field.astype(np.float64) ** 2).sum(axis=0)).max())

    @property
    def scales(self) -> np.ndarray:
        """Singular values of the fixed-to-moving world map's linear part (its scalings)."""
        return np.linalg.svd(self.world[:3, :3], compute_uv=False)

    def describe(self) -> str:
        """One line, e.g. ``"ANTs affine + SyN (CC); centre shift (1.0,-2.5,0.0) mm, scale
        0.91-0.93, displacement up to 6.3 mm; 4.2 s"``."""
        centre = self.fixed_affine @ np.append((np.asarray(self.fixed_shape) - 1) / 2.0, 1.0)
        shift = ",".join(f"{v:.1f}" for v in (self.world @ centre - centre)[:3])
        scales = self.scales
        text = (
            f"{_METHOD_NAMES[self.engine, self.kind]}; centre shift ({shift}) mm, "
            f"scale {scales.min():.2f}-{scales.max():.2f}"
        )
        if self.field is not None:
            text += f", displacement up to {self.max_displacement:.1f} mm"
        return text + ("; cached" if self.cached else f"; {self.seconds:.1f} s")

    def doubt(self) -> str | None:
        """A warning when the affine part scales the anatomy more than two subjects of the same
        body part differ (outside 0.75-1.33): the context probably shows another anatomy, field
        of view or contrast, and the registration, though it ran, is likely wrong."""
        scales = self.scales
        low, high = _PLAUSIBLE_SCALE
        if scales.min() >= low and scales.max() <= high:
            return None
        return (
            f"'{self.moving_name}': registration scaled it by {scales.min():.2f}-"
            f"{scales.max():.2f} to fit the target (same-anatomy subjects: {low:g}-{high:g}); it "
            "may show another body part, field of view or contrast: check the context"
        )

    def _map(self, stack: np.ndarray | None, order: int) -> tuple[np.ndarray | None, float]:
        """``(N, *moving_shape)`` arrays (or None: coverage only) -> ``(N, *fixed_shape)``."""
        if self.field is None:
            arrays = [np.zeros(self.moving_shape, np.float32)] if stack is None else list(stack)
            mode = "linear" if order == 1 else "nearest"
            results = [
                resample_to_grid(
                    a, self.moving_affine, self.fixed_shape, self.fixed_affine, mode, self.world
                )
                for a in arrays
            ]
            values = None if stack is None else np.stack([v for v, _ in results])
            return values, results[0][1]
        return _warp_with_field(self, stack, order)


_METHOD_NAMES = {
    ("sitk", "affine"): "rigid+affine, Mattes MI",
    ("sitk", "deformable"): "rigid+affine, Mattes MI, then demons",
    ("ants", "affine"): "ANTs affine",
    ("ants", "deformable"): "ANTs affine + SyN",
}


def resample_to_grid(
    array: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    target_affine: np.ndarray,
    interpolation: str,
    world: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Sample ``array`` (on ``affine``'s grid) at the voxel centres of another grid.

    ``world`` maps target world coordinates to source world coordinates (RAS, 4x4); ``None`` is
    the identity. Points within half a voxel of the source's edge take the edge value (as ITK
    does); points further out get 0.

    Returns:
        The resampled float32 array of ``shape`` and the fraction of target voxels inside the
        source.
    """
    shape = tuple(int(s) for s in shape)
    composed = np.linalg.inv(affine) @ target_affine
    if world is not None:
        composed = np.linalg.inv(affine) @ world @ target_affine
    matrix, offset = composed[:3, :3], composed[:3, 3]
    order = 1 if interpolation == "linear" else 0
    values = ndimage.affine_transform(
        array,
        matrix,
        offset=offset,
        output_shape=shape,
        order=order,
        mode="nearest",
        prefilter=False,
    ).astype(np.float32, copy=False)

    # The map is affine and the target grid convex: if its 8 corners land inside the source,
    # every voxel does, and the (costly) inside mask is not needed.
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape], indexing="ij"))
    corners = corners.reshape(3, -1).T @ matrix.T + offset
    upper = np.asarray(array.shape) - 0.5
    if np.all((corners >= -0.5) & (corners < upper)):
        return values, 1.0
    inside = ndimage.affine_transform(
        np.ones(array.shape, dtype=np.uint8),
        matrix,
        offset=offset,
        output_shape=shape,
        order=0,
        mode="grid-constant",
        cval=0,
        prefilter=False,
    ).astype(bool)
    values[~inside] = 0.0
    return values, float(inside.mean())


def _warp_with_field(
    reg: Registration, data: np.ndarray | None, order: int
) -> tuple[np.ndarray | None, float]:
    """Map every fixed voxel centre ``x`` to ``world @ (x + u(x))`` and sample each of the
    ``(N, *moving_shape)`` arrays there (the mapping is computed once for all of them)."""
    assert reg.field is not None and reg.field_affine is not None
    to_field = np.linalg.inv(reg.field_affine) @ reg.fixed_affine  # fixed index -> field index
    to_moving = np.linalg.inv(reg.moving_affine) @ reg.world  # world (RAS) -> moving index
    index_map = to_moving @ reg.fixed_affine  # fixed index -> moving index, without the field
    linear = to_moving[:3, :3]  # a displacement (mm) -> moving index offset
    nx, ny, nz = reg.fixed_shape
    upper = (np.asarray(reg.moving_shape, dtype=np.float64) - 0.5)[:, None]
    out = None if data is None else np.empty((len(data), *reg.fixed_shape), dtype=np.float32)
    inside_total = 0
    step = max(1, _WARP_CHUNK // max(1, ny * nz))
    yz = np.indices((ny, nz), dtype=np.float64).reshape(2, -1)
    for x0 in range(0, nx, step):
        x1 = min(nx, x0 + step)
        count = x1 - x0
        offset = to_field[:3, 3] + to_field[:3, 0] * x0
        displacement = np.stack(
            [
                ndimage.affine_transform(
                    reg.field[axis],
                    to_field[:3, :3],
                    offset=offset,
                    output_shape=(count, ny, nz),
                    order=1,
                    mode="nearest",
                    prefilter=False,
                ).reshape(-1)
                for axis in range(3)
            ]
        ).astype(np.float64)
        index = np.empty((3, count * ny * nz), dtype=np.float64)
        index[0] = np.repeat(np.arange(x0, x1, dtype=np.float64), ny * nz)
        index[1:] = np.tile(yz, count)
        coords = index_map[:3, :3] @ index + index_map[:3, 3:4] + linear @ displacement
        inside = np.all((coords >= -0.5) & (coords < upper), axis=0)
        inside_total += int(inside.sum())
        if data is not None and out is not None:
            for n, array in enumerate(data):
                values = ndimage.map_coordinates(
                    array, coords, order=order, mode="nearest", prefilter=False
                ).astype(np.float32, copy=False)
                values[~inside] = 0.0
                out[n, x0:x1] = values.reshape(count, ny, nz)
    return out, inside_total / float(nx * ny * nz)
