"""Register one volume onto another (affine or deformable) and warp arrays with the result.

One module for every registration in medverse: context alignment (``--align affine`` /
``deformable`` in :mod:`medverse.io.alignment`) and the multi-atlas baselines
(:mod:`medverse.evaluation.baselines`).

Two engines:

* ``"ants"`` (antspyx): ``"affine"`` is ANTs' ``Affine`` (global correlation, centre-of-mass
  initialisation); ``"deformable"`` adds SyN (local cross-correlation, radius 1) on top of that
  affine, restricted to where the moving volume has data. Both run on block-averaged copies of
  the images with at most :attr:`RegistrationSettings.grid_voxels` voxels (2 mm 96x112x96 ->
  4 mm, 1 mm 181x217x181 -> 4 mm) with a fixed random seed; the transform is then applied at
  full resolution. Both metrics give the same result on any number of threads (Mattes MI does
  not). ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process: it is set to 2
  before antspyx is first used, unless already set.
* ``"sitk"`` (SimpleITK): ``"affine"`` is rigid then affine, Mattes mutual information, on images
  block-averaged to at most 48 voxels per axis, one thread, fixed sampling seed (the historical
  ``--align affine``); ``"deformable"`` adds fast symmetric-forces demons after histogram matching.

Every result is the same object whatever the engine: a world-space affine (``world``: fixed world
point -> moving world point, RAS mm) and, for deformable registrations, a displacement field
``u`` (RAS mm, defined on the fixed side) so that a fixed point ``x`` maps to
``world @ (x + u(x))``. :meth:`Registration.warp` resamples any array on the moving grid onto the
fixed grid with it (numpy/scipy, no engine needed), so a cached result is all that is needed.

Example:
    >>> import numpy as np
    >>> from medverse.io import Volume
    >>> from medverse.registration import RegistrationCache, register
    >>> grid = np.indices((40, 40, 40)).astype(np.float32)
    >>> fixed = Volume(np.exp(-((grid - 20) ** 2).sum(0) / 60), np.eye(4), name="fixed")
    >>> moving = Volume(np.exp(-((grid - 23) ** 2).sum(0) / 60), np.eye(4), name="moving")
    >>> reg = register(fixed, moving, kind="affine", engine="sitk")  # doctest: +SKIP
    >>> reg.warp(moving.array).shape  # doctest: +SKIP
    (40, 40, 40)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from medverse.errors import InputError, RegistrationError
from medverse.files import atomic_path
from medverse.intensity import normalize_intensity
from medverse.types import PathLike
from medverse.validation import check_option, format_shape

if TYPE_CHECKING:
    from medverse.io.volume import Volume

__all__ = [
    "ENGINES",
    "REGISTRATION_KINDS",
    "Registration",
    "RegistrationCache",
    "RegistrationSettings",
    "default_cache_dir",
    "register",
    "resample_to_grid",
]

logger = logging.getLogger(__name__)

ENGINES = ("ants", "sitk")
"""Registration back ends: antspyx (``"ants"``) or SimpleITK (``"sitk"``)."""
REGISTRATION_KINDS = ("affine", "deformable")
"""``"affine"``: 12 parameters; ``"deformable"``: that affine, then a dense displacement field."""

_FORMAT = "medverse-registration-1"  # cache entries and keys; bump when results would change
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK/ANTs are LPS, our affines RAS; self-inverse
_CLIP = (0.5, 99.5)  # percentile clipping before registration
_SITK_SEED = 1234  # SimpleITK metric sampling seed
_SITK_MAX_SIZE = 48  # voxels per axis the SimpleITK affine metric sees at its finest level
_SCALE_RANGE = (0.25, 4.0)  # an affine scaling outside this means the registration failed
# Adult heads differ in size by well under 25 %; same-anatomy kit registrations scale by
# 0.93-1.07, while a context of another body part scaled by 0.34-0.91 and an inverted-contrast
# one by 0.61-0.88 (both "succeeded"). Outside this range the result is kept but doubted.
_PLAUSIBLE_SCALE = (0.75, 1.33)
_WARP_CHUNK = 2_000_000  # fixed voxels mapped at once by a deformable warp (~100 MB temporaries)
_ANTS_LOCK = threading.Lock()  # the seed is process-wide
_THREADS_VARIABLE = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


@dataclass(frozen=True)
class RegistrationSettings:
    """Knobs of :func:`register`; every field is part of the cache key.

    Args:
        grid_voxels: ANTs, and the demons stage: registration runs on copies of the images
            block-averaged by the smallest integer factor that leaves at most this many voxels
            on the fixed grid (the moving image is averaged to about the same voxel size).
        threads: SimpleITK demons threads (fixed: its reductions depend on it). ANTs takes its
            thread count from ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process.
        seed: ANTs random seed (metric sampling).
        affine_metric: ANTs affine similarity: ``"GC"`` (global correlation; gives the same
            result on any number of threads) or ``"mattes"`` (mutual information, for other
            contrasts; varies slightly run to run when ITK uses more than one thread).
        syn_metric: ANTs SyN similarity: ``"CC"`` (local cross-correlation) or ``"mattes"``.
        syn_radius: CC radius in voxels of the registration grid (bins for ``"mattes"``).
        syn_iterations: SyN iterations per level (shrink factors 4, 2, 1 of the grid).
        grad_step, flow_sigma, total_sigma: SyN step and regularisation (voxels).
        demons_iterations: SimpleITK demons iterations (``engine="sitk"``, deformable).
        demons_sigma: demons field smoothing (voxels of the registration grid).
    """

    grid_voxels: int = 160_000
    threads: int = 2
    seed: int = 1234
    affine_metric: str = "GC"
    syn_metric: str = "CC"
    syn_radius: int = 1
    syn_iterations: tuple[int, ...] = (40, 20, 10)
    grad_step: float = 0.2
    flow_sigma: float = 3.0
    total_sigma: float = 0.0
    demons_iterations: int = 30
    demons_sigma: float = 1.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "syn_iterations", tuple(int(i) for i in self.syn_iterations))
        if int(self.grid_voxels) < 8**3:
            raise InputError(f"grid_voxels must be >= 512, got {self.grid_voxels}")
        if int(self.threads) < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")
        check_option(self.syn_metric, ("CC", "mattes"), "syn_metric")
        check_option(self.affine_metric, ("GC", "mattes"), "affine_metric")


# ------------------------------------------------------------------------------- the result


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
        cached: whether the result came from a :class:`RegistrationCache`.
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


# -------------------------------------------------------------------------------- the cache


def default_cache_dir() -> Path:
    """Where registrations are cached by default.

    ``$MEDVERSE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/medverse/registrations``, else
    ``~/.cache/medverse/registrations``.
    """
    explicit = os.environ.get("MEDVERSE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "medverse" / "registrations"


class RegistrationCache:
    """Registrations on disk, one ``.npz`` per (fixed, moving, kind, engine, settings).

    The key is a BLAKE2 digest of both arrays, shapes and affines, the kind, engine, engine
    version and every setting, so any change to the inputs gives another entry. Entries are
    written to a temporary file and moved into place (``os.replace``), so concurrent writers and
    interrupted runs never leave a partial entry; an unreadable entry is ignored (and rewritten).

    Args:
        directory: the cache folder (created on first write); ``None`` uses
            :func:`default_cache_dir`.

    Example:
        >>> cache = RegistrationCache("/tmp/medverse-registrations")  # doctest: +SKIP
        >>> register(target, context, cache=cache).cached  # doctest: +SKIP
        False
        >>> register(target, context, cache=cache).cached  # doctest: +SKIP
        True
    """

    def __init__(self, directory: PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()

    def __repr__(self) -> str:
        return f"RegistrationCache('{self.directory}')"

    def path(self, key: str) -> Path:
        """The file that holds (or would hold) the entry ``key``."""
        return self.directory / key[:2] / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The stored arrays of ``key``, or ``None`` when absent or unreadable."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                entry = {name: np.array(stored[name]) for name in stored.files}
            _check_entry(entry)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("ignoring unreadable registration cache entry %s (%s)", path, error)
            return None
        return entry

    def save(self, key: str, entry: dict[str, np.ndarray]) -> Path:
        """Write ``entry`` for ``key`` atomically; returns the path."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **entry)
        return path

    def clear(self) -> int:
        """Delete every entry; returns how many were removed."""
        removed = 0
        if self.directory.is_dir():
            for path in self.directory.glob("*/*.npz"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _check_entry(entry: dict[str, np.ndarray]) -> None:
    if str(entry.get("format", "")) != _FORMAT:
        raise ValueError(f"format {entry.get('format')!r}, expected {_FORMAT!r}")
    world = entry["world"]
    if world.shape != (4, 4) or not np.isfinite(world).all():
        raise ValueError("world matrix is not a finite 4x4")
    if "field" in entry:
        field, field_affine = entry["field"], entry["field_affine"]
        if field.ndim != 4 or field.shape[0] != 3 or not np.isfinite(field).all():
            raise ValueError("displacement field is not a finite (3, X, Y, Z) array")
        if field_affine.shape != (4, 4):
            raise ValueError("field affine is not 4x4")


def registration_key(
    fixed: Volume, moving: Volume, kind: str, engine: str, settings: RegistrationSettings
) -> str:
    """The cache key of a registration: a digest of everything its result depends on."""
    digest = hashlib.blake2b(digest_size=20)
    header = {
        "format": _FORMAT,
        "kind": kind,
        "engine": engine,
        "engine_version": _engine_version(engine),
        "settings": asdict(settings),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for volume in (fixed, moving):
        array = np.ascontiguousarray(volume.array, dtype=np.float32)
        digest.update(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(volume.affine, dtype=np.float64).tobytes())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _engine_version(engine: str) -> str:
    if engine == "sitk":
        return str(sitk.Version.VersionString())
    ants = _import_ants()
    return str(getattr(ants, "__version__", "unknown"))


# ------------------------------------------------------------------------------- register


def register(
    fixed: Volume,
    moving: Volume,
    *,
    kind: str = "deformable",
    engine: str = "ants",
    cache: RegistrationCache | None = None,
    settings: RegistrationSettings | None = None,
) -> Registration:
    """Register ``moving`` onto ``fixed``.

    The volumes may be on different grids, spacings and orientations: both affines are used
    (registration happens in world coordinates, starting from aligned centres of mass), so a
    context may also be shifted or rotated relative to the target.

    Args:
        fixed: the volume whose grid results are sampled on (the target).
        moving: the volume to move (a context image).
        kind: ``"affine"`` or ``"deformable"`` (the affine, then a displacement field).
        engine: ``"ants"`` or ``"sitk"``.
        cache: where to look up and store the result; ``None`` always registers.
        settings: registration settings; ``None`` uses the defaults.

    Returns:
        A :class:`Registration`; ``reg.warp(moving_array)`` resamples onto the fixed grid.

    Raises:
        InputError: a constant or non-finite image, an engine failure, a non-finite result, or
            no overlap after registration; the message names the moving volume.
    """
    kind = check_option(kind, REGISTRATION_KINDS, "kind")
    engine = check_option(engine, ENGINES, "engine")
    settings = settings or RegistrationSettings()
    _check_image(fixed, moving, "fixed")
    _check_image(moving, moving, "moving")
    key = ""
    if cache is not None:
        key = registration_key(fixed, moving, kind, engine, settings)
        entry = cache.load(key)
        if entry is not None:
            logger.debug("registration of '%s' read from %s", moving.name, cache.path(key))
            return _from_entry(entry, fixed, moving, kind, engine, key)

    if kind == "affine":
        start = time.perf_counter()
        world = _guard(
            lambda: _AFFINE[engine](fixed, moving, settings), fixed, moving, kind, engine
        )
        reg = _result(fixed, moving, kind, engine, world, None, None, key)
        reg.seconds = time.perf_counter() - start
    else:
        affine = register(
            fixed, moving, kind="affine", engine=engine, cache=cache, settings=settings
        )
        start = time.perf_counter()
        field, field_affine = _guard(
            lambda: _DEFORMABLE[engine](fixed, moving, affine.world, settings),
            fixed,
            moving,
            kind,
            engine,
        )
        reg = _result(fixed, moving, kind, engine, affine.world, field, field_affine, key)
        reg.seconds = affine.seconds + time.perf_counter() - start

    _check_result(reg, fixed, moving)
    if cache is not None:
        entry = {"format": np.array(_FORMAT), "world": reg.world, "seconds": np.array(reg.seconds)}
        if reg.field is not None and reg.field_affine is not None:
            entry.update(field=reg.field, field_affine=reg.field_affine)
        try:
            cache.save(key, entry)
        except OSError as error:  # a read-only or full disk must not fail the registration
            logger.warning("could not write registration cache entry: %s", error)
    logger.info("registered '%s' onto '%s': %s", moving.name, fixed.name, reg.describe())
    return reg


def _result(
    fixed: Volume,
    moving: Volume,
    kind: str,
    engine: str,
    world: np.ndarray,
    field: np.ndarray | None,
    field_affine: np.ndarray | None,
    key: str,
) -> Registration:
    return Registration(
        kind=kind,
        engine=engine,
        fixed_shape=fixed.shape,
        fixed_affine=np.array(fixed.affine, dtype=np.float64),
        moving_shape=moving.shape,
        moving_affine=np.array(moving.affine, dtype=np.float64),
        world=np.asarray(world, dtype=np.float64),
        field=None if field is None else np.ascontiguousarray(field, dtype=np.float32),
        field_affine=None if field_affine is None else np.asarray(field_affine, np.float64),
        moving_name=moving.name,
        fixed_name=fixed.name,
        key=key,
    )


def _from_entry(
    entry: dict[str, np.ndarray], fixed: Volume, moving: Volume, kind: str, engine: str, key: str
) -> Registration:
    reg = _result(
        fixed,
        moving,
        kind,
        engine,
        entry["world"],
        entry.get("field"),
        entry.get("field_affine"),
        key,
    )
    reg.cached = True
    return reg


def _check_image(volume: Volume, moving: Volume, role: str) -> None:
    data = volume.array
    what = f"'{volume.name}'" if role == "moving" else f"target '{volume.name}'"
    head = f"cannot register '{moving.name}'"
    if not np.isfinite(data).all():
        raise InputError(f"{head}: {what} has NaN or Inf voxels; replace them first")
    if data.size == 0 or float(data.min()) == float(data.max()):
        value = f"{float(data.min()):g}" if data.size else "n/a"
        raise InputError(
            f"{head}: {what} is a constant image (every voxel is {value}); nothing to align"
        )
    low, high = np.percentile(data, _CLIP)
    if low == high:
        raise InputError(
            f"{head}: {what} is almost constant (more than 99 % of its voxels are {low:g}); "
            "nothing to align"
        )


def _guard(run: Any, fixed: Volume, moving: Volume, kind: str, engine: str) -> Any:
    try:
        return run()
    except InputError:
        raise
    except (RuntimeError, ValueError, OSError) as error:
        hint = " (the library printed the reason above)" if "error code" in str(error) else ""
        raise RegistrationError(
            f"'{moving.name}': {engine} {kind} registration onto '{fixed.name}' failed "
            f"({type(error).__name__}: {error}){hint}"
        ) from error


def _check_result(reg: Registration, fixed: Volume, moving: Volume) -> None:
    head = f"'{moving.name}': {reg.engine} {reg.kind} registration onto '{fixed.name}'"
    if not np.isfinite(reg.world).all() or abs(np.linalg.det(reg.world[:3, :3])) < 1e-6:
        raise RegistrationError(f"{head} gave a degenerate transform (NaN or singular)")
    scales = reg.scales
    if scales.min() < _SCALE_RANGE[0] or scales.max() > _SCALE_RANGE[1]:
        raise RegistrationError(
            f"{head} failed: it scales the anatomy by {scales.min():.2f}-{scales.max():.2f}, "
            "outside the plausible 0.25-4; check that both images show the same body part"
        )
    if reg.field is not None and not np.isfinite(reg.field).all():
        raise RegistrationError(f"{head} gave a displacement field with NaN or Inf values")
    if reg.coverage == 0.0:
        raise RegistrationError(
            f"{head}: after registration the target grid {fixed.describe()} does not overlap "
            f"'{moving.name}' ({moving.describe()}); check that both show the same anatomy"
        )


# -------------------------------------------------------------------------- image helpers


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


def _to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    from medverse.io.volume import _to_sitk as to_sitk  # one copy; imported late (no cycle)

    return to_sitk(array, affine)


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


def _from_sitk_array(image: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0), np.float32)


# ----------------------------------------------------------------------- SimpleITK engine


def _sitk_affine(
    fixed: Volume, moving: Volume, settings: RegistrationSettings | None = None
) -> np.ndarray:
    """Rigid then affine registration of ``moving`` onto ``fixed`` with SimpleITK.

    Mattes mutual information on percentile-clipped, min-max normalised intensities; images are
    block-averaged to at most 48 voxels per axis, then two resolution levels (shrink 2, 1);
    centred moments initialiser; random metric sampling with a fixed seed on one thread, so the
    result is deterministic.

    ``settings`` is not used: this path predates them and its results must not change.

    Returns:
        4x4 matrix (RAS, mm) mapping fixed world coordinates to moving world coordinates.
    """
    fixed_image = _sitk_registration_image(fixed)
    moving_image = _sitk_registration_image(moving)
    # ITK's metric threads split work dynamically, so sums (and the result) vary run to run;
    # one thread makes it reproducible, and on these small images it is as fast. The setting is
    # process-wide, so it is restored afterwards.
    num_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        rigid = sitk.Euler3DTransform(
            sitk.CenteredTransformInitializer(
                fixed_image,
                moving_image,
                sitk.Euler3DTransform(),
                sitk.CenteredTransformInitializerFilter.MOMENTS,
            )
        )
        _sitk_optimise(fixed_image, moving_image, rigid, iterations=100)
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        _sitk_optimise(fixed_image, moving_image, affine, iterations=100)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(num_threads)
    return _lps_world_to_ras(
        np.asarray(affine.GetMatrix(), dtype=np.float64).reshape(3, 3),
        np.asarray(affine.GetCenter(), dtype=np.float64),
        np.asarray(affine.GetTranslation(), dtype=np.float64),
    )


def _sitk_registration_image(volume: Volume) -> sitk.Image:
    array = normalize_intensity(volume.array, clip_percentiles=_CLIP, name=volume.name)
    image = _to_sitk(array, volume.affine)
    factors = [max(1, int(np.ceil(n / _SITK_MAX_SIZE))) for n in image.GetSize()]
    if max(factors) > 1:
        image = sitk.BinShrink(image, factors)  # block averages: anti-aliased and fast
    return image


def _sitk_optimise(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, *, iterations: int
) -> None:
    """Optimise ``transform`` in place (Mattes MI, regular-step gradient descent, two levels)."""
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(1)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.15, _SITK_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    logger.debug(
        "registration stopped after %d iterations: %s (metric %.4f)",
        method.GetOptimizerIteration(),
        method.GetOptimizerStopConditionDescription(),
        method.GetMetricValue(),
    )


def _sitk_demons(
    fixed: Volume, moving: Volume, world: np.ndarray, settings: RegistrationSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Fast symmetric-forces demons after the affine; returns (field (3, ...) RAS mm, affine)."""
    (fixed_small, fixed_affine), (moving_small, moving_affine) = _registration_grids(
        fixed, moving, settings
    )
    resampled, _ = resample_to_grid(
        moving_small, moving_affine, fixed_small.shape, fixed_affine, "linear", world
    )
    fixed_image = _to_sitk(fixed_small, fixed_affine)
    moving_image = _to_sitk(resampled, fixed_affine)
    moving_image = sitk.HistogramMatching(
        moving_image, fixed_image, numberOfHistogramLevels=64, numberOfMatchPoints=7
    )
    overlap = _overlap_mask(moving_small, moving_affine, fixed_small.shape, fixed_affine, world)
    if overlap is not None:  # no image force where the context has no data (demons has no mask)
        matched = _from_sitk_array(moving_image)
        matched[overlap == 0] = fixed_small[overlap == 0]
        moving_image = _to_sitk(matched, fixed_affine)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfThreads(int(settings.threads))
    demons.SetNumberOfIterations(int(settings.demons_iterations))
    demons.SetStandardDeviations(float(settings.demons_sigma))
    field = demons.Execute(fixed_image, moving_image)
    # (Z, Y, X, 3) LPS -> (3, X, Y, Z) RAS
    vectors = sitk.GetArrayFromImage(field).transpose(3, 2, 1, 0).astype(np.float32)
    vectors[:2] *= -1.0
    return vectors, fixed_affine


# ---------------------------------------------------------------------------- ANTs engine


def _import_ants() -> Any:
    # ITK reads its thread count once, when the library is first used: set it before that
    # (unless the user did), so ANTs uses at most 2 threads by default.
    os.environ.setdefault(_THREADS_VARIABLE, str(RegistrationSettings.threads))
    try:
        import ants
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError(
            "engine='ants' needs antspyx (pip install antspyx); or use engine='sitk'"
        ) from error
    return ants


@contextlib.contextmanager
def _ants_session(settings: RegistrationSettings) -> Iterator[tuple[Any, Path]]:
    """The random seed for one ANTs call, and a private folder for its files."""
    ants = _import_ants()
    with _ANTS_LOCK:
        previous_seed = getattr(ants.config, "_random_seed", None)
        ants.config._random_seed = int(settings.seed)
        try:
            with tempfile.TemporaryDirectory(prefix="medverse-ants-") as folder:
                yield ants, Path(folder)
        finally:
            ants.config._random_seed = previous_seed


def _ants_image(ants: Any, array: np.ndarray, affine: np.ndarray) -> Any:
    affine_lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = _spacing(affine_lps)
    return ants.from_numpy(
        np.ascontiguousarray(array, dtype=np.float32),
        origin=tuple(float(v) for v in affine_lps[:3, 3]),
        spacing=tuple(float(s) for s in spacing),
        direction=affine_lps[:3, :3] / spacing,
    )


def _ants_affine(fixed: Volume, moving: Volume, settings: RegistrationSettings) -> np.ndarray:
    """ANTs ``Affine`` (centre-of-mass start) on the block-averaged copies."""
    (fixed_small, fixed_affine), (moving_small, moving_affine) = _registration_grids(
        fixed, moving, settings
    )
    with _ants_session(settings) as (ants, folder):
        result = ants.registration(
            _ants_image(ants, fixed_small, fixed_affine),
            _ants_image(ants, moving_small, moving_affine),
            type_of_transform="Affine",
            outprefix=str(folder / "affine_"),
            aff_metric=settings.affine_metric,
        )
        transform = ants.read_transform(result["fwdtransforms"][-1])
        parameters = np.asarray(transform.parameters, dtype=np.float64)
        center = np.asarray(transform.fixed_parameters, dtype=np.float64)
    return _lps_world_to_ras(parameters[:9].reshape(3, 3), center, parameters[9:12])


def _ants_syn(
    fixed: Volume, moving: Volume, world: np.ndarray, settings: RegistrationSettings
) -> tuple[np.ndarray, np.ndarray]:
    """SyN on top of ``world``; returns (field (3, ...) RAS mm, the field grid's affine)."""
    (fixed_small, fixed_affine), (moving_small, moving_affine) = _registration_grids(
        fixed, moving, settings
    )
    world_lps = _LPS_TO_RAS @ world @ _LPS_TO_RAS
    overlap = _overlap_mask(moving_small, moving_affine, fixed_small.shape, fixed_affine, world)
    with _ants_session(settings) as (ants, folder):
        initial = ants.create_ants_transform(
            transform_type="AffineTransform",
            precision="double",
            dimension=3,
            parameters=np.concatenate([world_lps[:3, :3].ravel(), world_lps[:3, 3]]),
            fixed_parameters=np.zeros(3),
        )
        initial_path = str(folder / "initial.mat")
        ants.write_transform(initial, initial_path)
        metric = "CC" if settings.syn_metric == "CC" else "mattes"
        result = ants.registration(
            _ants_image(ants, fixed_small, fixed_affine),
            _ants_image(ants, moving_small, moving_affine),
            type_of_transform="SyNOnly",
            initial_transform=[initial_path],
            outprefix=str(folder / "syn_"),
            syn_metric=metric,
            syn_sampling=int(settings.syn_radius),
            reg_iterations=settings.syn_iterations,
            grad_step=float(settings.grad_step),
            flow_sigma=float(settings.flow_sigma),
            total_sigma=float(settings.total_sigma),
            mask=None if overlap is None else _ants_image(ants, overlap, fixed_affine),
        )
        warps = [p for p in result["fwdtransforms"] if str(p).endswith((".nii.gz", ".nii"))]
        if not warps:
            raise RuntimeError(f"SyN wrote no displacement field ({result['fwdtransforms']})")
        field_image = ants.image_read(warps[0])
        vectors = np.asarray(field_image.numpy(), dtype=np.float32)  # (X, Y, Z, 3), LPS
        direction = np.asarray(field_image.direction, dtype=np.float64).reshape(3, 3)
        field_lps = np.eye(4)
        field_lps[:3, :3] = direction * np.asarray(field_image.spacing, dtype=np.float64)
        field_lps[:3, 3] = np.asarray(field_image.origin, dtype=np.float64)
    vectors = np.ascontiguousarray(vectors.transpose(3, 0, 1, 2))
    vectors[:2] *= -1.0
    return vectors, _LPS_TO_RAS @ field_lps


_AFFINE: dict[str, Any] = {"sitk": _sitk_affine, "ants": _ants_affine}
_DEFORMABLE: dict[str, Any] = {"sitk": _sitk_demons, "ants": _ants_syn}
