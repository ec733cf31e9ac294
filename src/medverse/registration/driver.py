"""``register``: one registration, from the inputs' checks to the checked, cached result.

The volumes are checked, the cache is looked up, the engine's affine (and, for
``"deformable"``, its displacement field on top of that affine) is run, and the result is
checked (finite, a plausible scale, overlap) and stored.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from medverse.errors import InputError, RegistrationError
from medverse.registration.ants_engine import _ants_affine, _ants_syn
from medverse.registration.cache import _FORMAT, RegistrationCache, registration_key
from medverse.registration.images import _CLIP
from medverse.registration.settings import ENGINES, REGISTRATION_KINDS, RegistrationSettings
from medverse.registration.sitk_engine import _sitk_affine, _sitk_demons
from medverse.registration.transform import Registration
from medverse.validation import check_option

if TYPE_CHECKING:
    from medverse.io.volume import Volume

__all__ = ["MIN_VOXELS_PER_AXIS", "register"]

logger = logging.getLogger(__name__)

_SCALE_RANGE = (0.25, 4.0)  # an affine scaling outside this means the registration failed
#: Fewer voxels than this along an axis and the engines fail (SimpleITK's smoothing needs 4).
MIN_VOXELS_PER_AXIS = 4
_AFFINE: dict[str, Any] = {"sitk": _sitk_affine, "ants": _ants_affine}
_DEFORMABLE: dict[str, Any] = {"sitk": _sitk_demons, "ants": _ants_syn}


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
        A :class:`~medverse.registration.transform.Registration`; ``reg.warp(moving_array)``
        resamples onto the fixed grid.

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
    if data.ndim == 3 and min(data.shape) < MIN_VOXELS_PER_AXIS:
        axis = int(np.argmin(data.shape))
        raise InputError(
            f"{head}: {what} has {data.shape[axis]} voxel(s) along axis {axis} (shape "
            f"{data.shape}); registration needs at least {MIN_VOXELS_PER_AXIS} along every axis. "
            "Align by scanner coordinates instead (mode='physical') or give a thicker volume"
        )
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
            f"({type(error).__name__}: {' '.join(str(error).split())}){hint}"
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
