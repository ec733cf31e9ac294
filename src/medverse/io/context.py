"""Context pairs: load an image and its output, normalise intensities, and bring contexts onto the
target's voxel grid.

The network crops the target and every context at the same window position, so contexts must share
the target's grid (shape, and for a meaningful result, anatomy). Three ways to get there:

* ``"physical"``: resample in world coordinates using both affines (voxels outside the context's
  field of view become 0). Correct when the affines are trustworthy.
* ``"fov"``: field-of-view matching, as the released code effectively does: reorient the context to
  the target's axis orientation, then resize the whole volume to the target shape voxel for voxel,
  ignoring spacing and origin.
* ``"affine"``: register the context image onto the target image (rigid, then affine; Mattes mutual
  information; deterministic) and resample with that transform. The output (mask) reuses the
  transform computed from the image.

Masks are resampled with nearest neighbour, images linearly.

Example:
    >>> import numpy as np
    >>> from medverse.io import Volume, ContextPair, align_pair
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from medverse.errors import InputError
from medverse.io.volume import Volume, _to_sitk, read_volume
from medverse.types import PathLike
from medverse.validation import (
    check_finite,
    check_nonempty_mask,
    check_option,
    check_same_grid,
    check_volume,
    format_shape,
    format_spacing,
)

__all__ = [
    "ALIGN_MODES",
    "INTERPOLATIONS",
    "OUTPUT_KINDS",
    "ContextPair",
    "align_pair",
    "align_to_target",
    "normalize_intensity",
    "output_range",
    "relative_bounds",
    "mean_bounds",
]

logger = logging.getLogger(__name__)

ALIGN_MODES = ("physical", "fov", "affine")
"""How :func:`align_to_target` brings a volume onto the target grid."""
INTERPOLATIONS = ("linear", "nearest")
OUTPUT_KINDS = ("label", "image")
"""What a context output is: a mask (segmentation) or an image (transformation, enhancement)."""

_GRID_ATOL = 1e-4  # mm; affines closer than this count as the same grid
_REGISTRATION_SEED = 1234  # metric sampling seed: fixed, so "affine" mode is deterministic
_REGISTRATION_MAX_SIZE = 48  # voxels per axis the metric sees at the finest level
_REGISTRATION_CLIP = (0.5, 99.5)  # percentile clipping before the metric's histogram


@dataclass(eq=False)
class ContextPair:
    """One in-context example: an image and its output (a mask or another image) on one grid.

    Args:
        image: the context image.
        output: the context output, on the same grid as ``image``.
        output_kind: ``"label"`` (a mask; must have foreground) or ``"image"``.

    Raises:
        InputError: the two are not on the same grid, the image is constant or not finite, or a
            label output has no foreground voxel.
    """

    image: Volume
    output: Volume
    output_kind: str = "label"

    def __post_init__(self) -> None:
        check_option(self.output_kind, OUTPUT_KINDS, "output_kind")
        check_same_grid(
            self.image.shape,
            self.image.affine,
            self.output.shape,
            self.output.affine,
            self.image.name,
            self.output.name,
        )
        check_volume(self.image.array, self.image.name)
        if self.output_kind == "label":
            check_finite(self.output.array, self.output.name)
            check_nonempty_mask(self.output.array, self.output.name)
        else:
            check_volume(self.output.array, self.output.name)

    @classmethod
    def from_files(
        cls, image_path: PathLike, output_path: PathLike, *, output_kind: str = "label"
    ) -> ContextPair:
        """Read a context image and its output from disk (any format :func:`read_volume` reads).

        Args:
            image_path: the context image.
            output_path: its mask (``output_kind="label"``) or output image.
            output_kind: ``"label"`` or ``"image"``.

        Raises:
            InputError: unreadable files, or the two files are not on the same grid (the message
                names both).

        Example:
            >>> pair = ContextPair.from_files("ct_003.nii.gz", "liver_003.nii.gz")  # doctest: +SKIP
        """
        check_option(output_kind, OUTPUT_KINDS, "output_kind")
        image = read_volume(image_path, kind="image")
        output = read_volume(output_path, kind="label" if output_kind == "label" else "image")
        return cls(image=image, output=output, output_kind=output_kind)

    @property
    def name(self) -> str:
        """The context image's name."""
        return self.image.name


def normalize_intensity(
    array: Any,
    *,
    clip_percentiles: tuple[float, float] | None = None,
    name: str = "array",
) -> np.ndarray:
    """Min-max normalise one volume to [0, 1], optionally clipping percentiles first.

    Computes ``(v - min) / max(max - min, 1e-8)`` after clipping to the given percentiles, so a
    constant volume maps to zeros rather than dividing by zero.

    Args:
        array: any-shape NumPy array or torch tensor, e.g. ``(X, Y, Z)``.
        clip_percentiles: ``(low, high)`` in [0, 100], e.g. ``(0.5, 99.5)`` for CT; ``None``
            clips nothing.
        name: how messages refer to the array.

    Returns:
        A new float32 array of the same shape with values in [0, 1].

    Raises:
        InputError: empty array, NaN/Inf values, or invalid percentiles.

    Example:
        >>> normalize_intensity(np.array([-1000.0, 0.0, 1000.0]))
        array([0. , 0.5, 1. ], dtype=float32)
    """
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    data = np.asarray(array, dtype=np.float32)
    if data.size == 0:
        raise InputError(f"'{name}': cannot normalise an empty array (shape {data.shape})")
    check_finite(data, name)
    if clip_percentiles is not None:
        low_q, high_q = _check_percentiles(clip_percentiles)
        low, high = np.percentile(data, [low_q, high_q])
        data = np.clip(data, low, high)
    low, high = float(data.min()), float(data.max())
    return ((data - low) / max(high - low, 1e-8)).astype(np.float32, copy=False)


def output_range(
    target: np.ndarray, context_images: Sequence[np.ndarray], context_outputs: Sequence[np.ndarray]
) -> tuple[float, float]:
    """Intensity range ``(low, high)`` of an image task's output for ``target``, from the contexts.

    The network works on min-max normalised volumes, so its output must be mapped back to
    intensities. Each context says where its output's range lies relative to its input's range
    (``(output.min() - input.min()) / (input.max() - input.min())``, likewise for the maximum);
    the average of those relative bounds is applied to the target's range. For a denoising task
    the output range is narrower than the noisy input's; for skull stripping or bias correction
    it is about the same; a context set whose outputs are twice as bright as their inputs gives
    an output twice as bright as the target.

    Example:
        >>> noisy, clean = np.array([-0.2, 0.5, 1.2]), np.array([0.0, 0.5, 1.0])
        >>> output_range(np.array([-0.4, 2.4]), [noisy], [clean])
        (0.0, 2.0)
    """
    bounds = [relative_bounds(i, o) for i, o in zip(context_images, context_outputs, strict=True)]
    rel_low, rel_high = mean_bounds(bounds)
    low, high = float(np.min(target)), float(np.max(target))
    span = high - low
    return low + rel_low * span, low + rel_high * span


def relative_bounds(image: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """Where ``output``'s minimum and maximum lie in ``image``'s min-max units.

    Example:
        >>> [round(b, 3) for b in relative_bounds(np.array([-0.2, 1.2]), np.array([0.0, 1.0]))]
        [0.143, 0.857]
    """
    low, high = float(np.min(image)), float(np.max(image))
    span = max(high - low, 1e-8)
    return (float(np.min(output)) - low) / span, (float(np.max(output)) - low) / span


def mean_bounds(bounds: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The average of several contexts' :func:`relative_bounds` (what a target's output gets).

    Example:
        >>> mean_bounds([(0.0, 1.0), (0.2, 0.6)])
        (0.1, 0.8)
    """
    arr = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
    return float(arr[:, 0].mean()), float(arr[:, 1].mean())


def _check_percentiles(clip_percentiles: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in clip_percentiles)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"clip_percentiles must be a pair (low, high), got {clip_percentiles!r}"
        ) from error
    if not 0.0 <= low < high <= 100.0:
        raise InputError(
            f"clip_percentiles must satisfy 0 <= low < high <= 100, got ({low:g}, {high:g})"
        )
    return low, high


# -------------------------------------------------------------------------------- alignment


def align_to_target(
    volume: Volume,
    target: Volume,
    *,
    mode: str = "physical",
    interpolation: str | None = None,
) -> np.ndarray:
    """Resample ``volume`` onto the voxel grid of ``target``.

    Args:
        volume: the volume to move (a context image or output).
        target: the volume whose grid (shape and affine) the result takes.
        mode: ``"physical"`` (world coordinates from both affines; outside the source → 0),
            ``"fov"`` (reorient to the target's axis codes, then resize voxel for voxel, ignoring
            spacing and origin) or ``"affine"`` (register ``volume`` onto ``target`` with
            SimpleITK, then resample; always registers, even on a shared grid).
        interpolation: ``"linear"`` or ``"nearest"``; ``None`` picks nearest for
            ``volume.kind == "label"`` and linear otherwise.

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
    if mode != "affine" and _on_target_grid(volume, target, mode):
        return volume.array
    if mode == "fov":
        return _resize_fov(volume, target, interpolation)
    world = _register(volume, target) if mode == "affine" else None
    aligned, coverage = _resample(volume, target, interpolation, world)
    if coverage == 0.0:
        raise _no_overlap(volume, target)
    return aligned


def align_pair(
    pair: ContextPair,
    target: Volume,
    *,
    mode: str = "physical",
    output_kind: str | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Bring a context pair onto the target grid; the output follows the image exactly.

    In ``"affine"`` mode the transform is computed once, from the context image, and reused for
    the output. The image is interpolated linearly; the output with nearest neighbour if it is a
    label (so masks stay binary), linearly if it is an image.

    Args:
        pair: the context image and its output.
        target: the volume whose grid the results take.
        mode: ``"physical"``, ``"fov"`` or ``"affine"``; see :func:`align_to_target`.
        output_kind: ``"label"`` or ``"image"``; ``None`` uses ``pair.output_kind``.

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
    output_interpolation = "nearest" if output_kind == "label" else "linear"
    image, output = pair.image, pair.output
    head = f"context '{image.name}'"
    source_grid = f"{format_shape(image.shape)} {format_spacing(image.spacing)}"
    target_grid = f"{format_shape(target.shape)} {format_spacing(target.spacing)}"

    if mode != "affine" and _on_target_grid(image, target, mode):
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
    else:
        world = _register(image, target) if mode == "affine" else None
        aligned_image, coverage = _resample(image, target, "linear", world)
        if coverage == 0.0:
            raise _no_overlap(image, target)
        aligned_output, _ = _resample(output, target, output_interpolation, world)
        action = "resampled"
        if world is not None:
            action = f"registered ({_describe_transform(world, target)}) and resampled"
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
    """Sample ``volume`` at the target's voxel centres.

    ``world`` maps target world coordinates to source world coordinates (RAS, 4x4); ``None`` is
    the identity. Points within half a voxel of the source's edge take the edge value (as ITK
    does); points further out get 0.

    Returns:
        The resampled float32 array and the fraction of target voxels inside the source.
    """
    composed = np.linalg.inv(volume.affine) @ target.affine
    if world is not None:
        composed = np.linalg.inv(volume.affine) @ world @ target.affine
    matrix, offset = composed[:3, :3], composed[:3, 3]
    order = 1 if interpolation == "linear" else 0
    values = ndimage.affine_transform(
        volume.array,
        matrix,
        offset=offset,
        output_shape=target.shape,
        order=order,
        mode="nearest",
        prefilter=False,
    ).astype(np.float32, copy=False)

    # The map is affine and the target grid convex: if its 8 corners land inside the source,
    # every voxel does, and the (costly) inside mask is not needed.
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in target.shape], indexing="ij"))
    corners = corners.reshape(3, -1).T @ matrix.T + offset
    upper = np.asarray(volume.shape) - 0.5
    if np.all((corners >= -0.5) & (corners < upper)):
        return values, 1.0
    inside = ndimage.affine_transform(
        np.ones(volume.shape, dtype=np.uint8),
        matrix,
        offset=offset,
        output_shape=target.shape,
        order=0,
        mode="grid-constant",
        cval=0,
        prefilter=False,
    ).astype(bool)
    values[~inside] = 0.0
    return values, float(inside.mean())


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


# ----------------------------------------------------------------------------- registration


def _register(moving: Volume, fixed: Volume) -> np.ndarray:
    """Rigid then affine registration of ``moving`` onto ``fixed`` with SimpleITK.

    Mattes mutual information on percentile-clipped, min-max normalised intensities; images are
    block-averaged to at most 48 voxels per axis, then two resolution levels (shrink 2, 1);
    centred moments initialiser; random metric sampling with a fixed seed on one thread, so the
    result is deterministic.

    Returns:
        4x4 matrix (RAS, mm) mapping target world coordinates to context world coordinates.

    Raises:
        InputError: the registration failed (e.g. no overlap after initialisation).
    """
    fixed_image = _registration_image(fixed)
    moving_image = _registration_image(moving)
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
        _optimise(fixed_image, moving_image, rigid, iterations=100)
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        _optimise(fixed_image, moving_image, affine, iterations=100)
    except RuntimeError as error:
        raise InputError(
            f"context '{moving.name}': affine registration onto target '{fixed.name}' failed "
            f"({error}); try mode='physical' or mode='fov'"
        ) from error
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(num_threads)
    # ITK: x_moving = A (x - c) + c + t, in LPS. Turn it into one 4x4 matrix, then into RAS.
    matrix = np.asarray(affine.GetMatrix(), dtype=np.float64).reshape(3, 3)
    center = np.asarray(affine.GetCenter(), dtype=np.float64)
    translation = np.asarray(affine.GetTranslation(), dtype=np.float64)
    world_lps = np.eye(4)
    world_lps[:3, :3] = matrix
    world_lps[:3, 3] = translation + center - matrix @ center
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ world_lps @ flip


def _registration_image(volume: Volume) -> sitk.Image:
    data = normalize_intensity(volume.array, clip_percentiles=_REGISTRATION_CLIP, name=volume.name)
    image = _to_sitk(data, volume.affine)
    factors = [max(1, int(np.ceil(n / _REGISTRATION_MAX_SIZE))) for n in image.GetSize()]
    if max(factors) > 1:
        image = sitk.BinShrink(image, factors)  # block averages: anti-aliased and fast
    return image


def _optimise(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, *, iterations: int
) -> None:
    """Optimise ``transform`` in place (Mattes MI, regular-step gradient descent, two levels)."""
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(1)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.15, _REGISTRATION_SEED)
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


def _describe_transform(world: np.ndarray, target: Volume) -> str:
    """E.g. ``"rigid+affine, Mattes MI; centre shift (1.0,-2.5,0.0) mm, scale 0.91-0.93"``."""
    centre = target.affine @ np.append((np.asarray(target.shape) - 1) / 2.0, 1.0)
    shift = ",".join(f"{v:.1f}" for v in (world @ centre - centre)[:3])
    scales = np.linalg.svd(world[:3, :3], compute_uv=False)
    return (
        f"rigid+affine, Mattes MI; centre shift ({shift}) mm, "
        f"scale {scales.min():.2f}-{scales.max():.2f}"
    )
