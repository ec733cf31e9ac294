"""Alignment: bring a context pair onto the target's voxel grid.

The network crops the target and every context at the same window position, so contexts must share
the target's grid (shape, and for a meaningful result, anatomy). Four ways to get there:

* ``"physical"``: resample in world coordinates using both affines (voxels outside the context's
  field of view become 0). Correct when the affines are trustworthy.
* ``"fov"``: field-of-view matching, as the released code effectively does: reorient the context to
  the target's axis orientation, then resize the whole volume to the target shape voxel for voxel,
  ignoring spacing and origin.
* ``"affine"``: register the context image onto the target image (rigid, then affine; Mattes mutual
  information; deterministic) and resample with that transform. The output (mask) reuses the
  transform computed from the image.
* ``"deformable"``: register the context image onto the target (affine, then a deformable
  registration: ANTs SyN by default) and warp with that transform; the output follows.

Registrations come from :mod:`medverse.registration` (``engine="sitk"`` is the default for
``"affine"``, ``engine="ants"`` for ``"deformable"``); pass a
:class:`~medverse.registration.RegistrationCache` to reuse them across calls and runs.

Masks are resampled with nearest neighbour, images linearly.

Example:
    >>> import numpy as np
    >>> from medverse.io import ContextPair, Volume, align_pair
    >>> grid = np.indices((30, 30, 30)).astype(np.float32)
    >>> image = np.exp(-((grid - 15) ** 2).sum(0) / 50)
    >>> coarse = np.diag([2.0, 2.0, 2.0, 1.0]); coarse[:3, 3] = 0.5
    >>> pair = ContextPair(
    ...     Volume(image, coarse, name="a.nii.gz"),
    ...     Volume((image > 0.5).astype(np.float32), coarse, name="a_seg.nii.gz", kind="label"),
    ... )
    >>> target = Volume(np.random.rand(60, 60, 60), np.eye(4), name="target.nii.gz")
    >>> aligned_image, aligned_mask, what = align_pair(pair, target)
    >>> aligned_mask.shape, np.unique(aligned_mask).tolist()
    ((60, 60, 60), [0.0, 1.0])
    >>> what
    "context 'a.nii.gz': resampled from (30,30,30) 2.0 mm to target grid (60,60,60) 1.0 mm (physical)"
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from medverse.errors import InputError
from medverse.io.context import OUTPUT_KINDS, ContextPair
from medverse.io.volume import Volume
from medverse.registration.cache import RegistrationCache
from medverse.registration.driver import register
from medverse.registration.settings import ENGINES
from medverse.registration.transform import resample_to_grid
from medverse.validation import check_option, format_shape, format_spacing

__all__ = ["ALIGN_MODES", "INTERPOLATIONS", "align_pair", "align_to_target"]

logger = logging.getLogger(__name__)

ALIGN_MODES = ("physical", "fov", "affine", "deformable")
"""How :func:`align_to_target` brings a volume onto the target grid."""
INTERPOLATIONS = ("linear", "nearest")

_GRID_ATOL = 1e-4  # mm; affines closer than this count as the same grid
_REGISTERED = ("affine", "deformable")  # modes that register the context onto the target
_DEFAULT_ENGINE = {"affine": "sitk", "deformable": "ants"}


def align_to_target(
    volume: Volume,
    target: Volume,
    *,
    mode: str = "physical",
    interpolation: str | None = None,
    engine: str | None = None,
    cache: RegistrationCache | None = None,
) -> np.ndarray:
    """Resample ``volume`` onto the voxel grid of ``target``.

    Args:
        volume: the volume to move (a context image or output).
        target: the volume whose grid (shape and affine) the result takes.
        mode: ``"physical"`` (world coordinates from both affines; outside the source → 0),
            ``"fov"`` (reorient to the target's axis codes, then resize voxel for voxel, ignoring
            spacing and origin), ``"affine"`` (register ``volume`` onto ``target``, then
            resample; always registers, even on a shared grid) or ``"deformable"`` (affine,
            then deformable registration, then warp).
        interpolation: ``"linear"`` or ``"nearest"``; ``None`` picks nearest for
            ``volume.kind == "label"`` and linear otherwise.
        engine: registration engine, ``"sitk"`` or ``"ants"``; ``None`` uses ``"sitk"`` for
            ``"affine"`` and ``"ants"`` for ``"deformable"``. Ignored by the other modes.
        cache: a :class:`~medverse.registration.RegistrationCache` to reuse registrations.

    Returns:
        Float32 array of shape ``target.shape``. When the grids already match (``"physical"``
        and ``"fov"``) this is ``volume.array`` itself, untouched; copy it before writing to it.

    Raises:
        InputError: unknown mode/interpolation, no overlap in world coordinates, or the
            registration failed.

    Example:
        >>> moved = align_to_target(context, target, mode="physical")  # doctest: +SKIP
        >>> moved.shape == target.shape  # doctest: +SKIP
        True
    """
    mode = check_option(mode, ALIGN_MODES, "mode")
    if interpolation is None:
        interpolation = "nearest" if volume.kind == "label" else "linear"
    interpolation = check_option(interpolation, INTERPOLATIONS, "interpolation")
    engine = _engine(mode, engine)
    if mode not in _REGISTERED and _on_target_grid(volume, target, mode):
        return volume.array
    if mode == "fov":
        return _resize_fov(volume, target, interpolation)
    if mode in _REGISTERED:
        reg = register(target, volume, kind=mode, engine=engine, cache=cache)
        aligned = reg.warp(volume.array, interpolation=interpolation)
        coverage = reg.coverage
    else:
        aligned, coverage = _resample(volume, target, interpolation, None)
    if coverage == 0.0:
        raise _no_overlap(volume, target)
    return aligned


def align_pair(
    pair: ContextPair,
    target: Volume,
    *,
    mode: str = "physical",
    output_kind: str | None = None,
    engine: str | None = None,
    cache: RegistrationCache | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Bring a context pair onto the target grid; the output follows the image exactly.

    In ``"affine"`` and ``"deformable"`` modes the transform is computed once, from the context
    image, and reused for the output. The image is interpolated linearly; the output with nearest neighbour if it is a
    label (so masks stay binary), linearly if it is an image.

    Args:
        pair: the context image and its output.
        target: the volume whose grid the results take.
        mode: ``"physical"``, ``"fov"``, ``"affine"`` or ``"deformable"``; see
            :func:`align_to_target`.
        output_kind: ``"label"`` or ``"image"``; ``None`` uses ``pair.output_kind``.
        engine: ``"sitk"`` or ``"ants"``; ``None``: ``"sitk"`` for ``"affine"``, ``"ants"`` for
            ``"deformable"``. Ignored by the other modes.
        cache: a :class:`~medverse.registration.RegistrationCache` to reuse registrations.

    Returns:
        ``(image, output, description)``: two float32 arrays of shape ``target.shape`` and one
        line saying what was done, e.g. ``"context 'a.nii.gz': resampled from (90,100,80) 2.0 mm
        to target grid (128,128,64) 1.0 mm (physical)"``. Arrays already on the target grid are
        returned untouched (the same objects) and the description says so.

    Raises:
        InputError: unknown mode/output kind, no overlap, or the registration failed.
    """
    mode = check_option(mode, ALIGN_MODES, "mode")
    if output_kind is None:
        output_kind = pair.output_kind
    output_kind = check_option(output_kind, OUTPUT_KINDS, "output_kind")
    engine = _engine(mode, engine)
    output_interpolation = "nearest" if output_kind == "label" else "linear"
    image, output = pair.image, pair.output
    head = f"context '{image.name}'"
    source_grid = f"{format_shape(image.shape)} {format_spacing(image.spacing)}"
    target_grid = f"{format_shape(target.shape)} {format_spacing(target.spacing)}"

    if mode not in _REGISTERED and _on_target_grid(image, target, mode):
        if mode == "fov":
            description = (
                f"{head}: same shape {format_shape(image.shape)} and orientation "
                f"{''.join(image.orientation)} as the target; not resized (fov)"
            )
        else:
            description = f"{head}: already on the target grid {target_grid}; not resampled"
        logger.info(description)
        return image.array, output.array, description

    if mode == "fov":
        aligned_image = _resize_fov(image, target, "linear")
        aligned_output = _resize_fov(output, target, output_interpolation)
        reorient = ""
        if image.orientation != target.orientation:
            reorient = (
                f" after reorienting {''.join(image.orientation)} to {''.join(target.orientation)}"
            )
        description = (
            f"{head}: resized from {source_grid} to target grid {target_grid} voxel for voxel"
            f"{reorient} (fov; spacing and origin ignored)"
        )
    elif mode in _REGISTERED:
        reg = register(target, image, kind=mode, engine=engine, cache=cache)
        aligned_image = reg.warp(image.array, interpolation="linear")
        coverage = reg.coverage
        if coverage == 0.0:
            raise _no_overlap(image, target)
        aligned_output = reg.warp(output.array, interpolation=output_interpolation)
        verb = "resampled" if mode == "affine" else "warped"
        description = (
            f"{head}: registered ({reg.describe()}) and {verb} from {source_grid} to target grid "
            f"{target_grid} ({mode})"
        )
        if coverage < 0.999:
            description += f"; it covers {coverage:.0%} of the target, the rest is 0"
        doubt = reg.doubt()
        if doubt:
            description += f"\nwarning: {doubt}"
    else:
        aligned_image, coverage = _resample(image, target, "linear", None)
        if coverage == 0.0:
            raise _no_overlap(image, target)
        aligned_output, _ = _resample(output, target, output_interpolation, None)
        action = "resampled"
        description = f"{head}: {action} from {source_grid} to target grid {target_grid} ({mode})"
        if coverage < 0.999:
            description += f"; it covers {coverage:.0%} of the target, the rest is 0"
    logger.info(description)
    return aligned_image, aligned_output, description


def _on_target_grid(volume: Volume, target: Volume, mode: str) -> bool:
    if volume.shape != target.shape:
        return False
    if mode == "fov":  # spacing and origin are ignored; only the axis orientation matters
        return volume.orientation == target.orientation
    return bool(np.allclose(volume.affine, target.affine, rtol=0, atol=_GRID_ATOL))


def _no_overlap(volume: Volume, target: Volume) -> InputError:
    def where(v: Volume) -> str:
        origin = ",".join(f"{x:.1f}" for x in v.affine[:3, 3])
        return f"{v.describe()} at origin ({origin}) mm"

    return InputError(
        f"context '{volume.name}' ({where(volume)}) does not overlap target '{target.name}' "
        f"({where(target)}) in world coordinates; check the affines, or use mode='fov' "
        "(match fields of view) or mode='affine' (register)"
    )


def _resample(
    volume: Volume, target: Volume, interpolation: str, world: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """Sample ``volume`` at the target's voxel centres (see
    :func:`medverse.registration.resample_to_grid`); returns the array and the covered
    fraction."""
    return resample_to_grid(
        volume.array, volume.affine, target.shape, target.affine, interpolation, world
    )


def _engine(mode: str, engine: str | None) -> str:
    if engine is None:
        return _DEFAULT_ENGINE.get(mode, "sitk")
    return check_option(engine, ENGINES, "engine")


def _resize_fov(volume: Volume, target: Volume, interpolation: str) -> np.ndarray:
    """Reorient to the target's axis orientation, then resize to its shape voxel for voxel."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(volume.affine),
        nib.orientations.io_orientation(target.affine),
    )
    data = np.ascontiguousarray(nib.orientations.apply_orientation(volume.array, transform))
    if data.shape == target.shape:
        return data.astype(np.float32, copy=False)
    tensor = torch.from_numpy(data)[None, None]
    if interpolation == "linear":
        resized = F.interpolate(tensor, size=target.shape, mode="trilinear", align_corners=False)
    else:
        resized = F.interpolate(tensor, size=target.shape, mode="nearest-exact")
    return resized[0, 0].numpy().astype(np.float32, copy=False)
