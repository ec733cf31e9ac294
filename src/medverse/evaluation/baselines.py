"""Baselines that see exactly what the model sees: the target image and the k context pairs.

Every baseline has the method signature of :func:`medverse.evaluation.protocol.evaluate`::

    baseline(target_image, context_images, context_outputs, *, spacing, task_family) -> np.ndarray

with ``(X, Y, Z)`` arrays on the target grid (contexts are already on it) and ``spacing`` in mm.

* :func:`multi_atlas` — classic multi-atlas label fusion: each context image is registered to the
  target with SimpleITK (affine, then fast symmetric-forces demons, both on down-sampled images),
  its output is warped (nearest for masks, linear for images) and the warped outputs are fused
  (majority vote for masks, mean for images).
* :func:`context_mean` — the average of the context outputs, thresholded at 0.5 for masks
  (no registration: what the data alone give on a common grid).
* :func:`identity` — the input itself; for enhancement and transformation tasks.

Each baseline carries ``task_families``; the protocol runs it only on those families.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from medverse.errors import InputError

__all__ = [
    "clear_registration_cache",
    "context_mean",
    "identity",
    "multi_atlas",
    "register_to_target",
]

logger = logging.getLogger(__name__)

# Registration is deterministic, so a transform can be reused whenever the same (target, context)
# images meet again: across draws and across the tasks that share an input image. Keyed by a
# digest of both arrays, their spacing and the settings; least recently used entries go first.
_REGISTRATION_CACHE: OrderedDict[tuple, sitk.Transform] = OrderedDict()
_REGISTRATION_CACHE_SIZE = 128


def clear_registration_cache() -> None:
    """Forget every cached registration (up to 128 transforms, ~3 MB each at 96³)."""
    _REGISTRATION_CACHE.clear()


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest() + str(array.shape)


def _check_inputs(
    target_image: np.ndarray,
    context_images: Sequence[np.ndarray],
    context_outputs: Sequence[np.ndarray],
    *,
    need_images: bool,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    target = np.asarray(target_image, dtype=np.float32)
    if target.ndim != 3:
        raise InputError(f"target_image must be 3-D (X, Y, Z), got shape {target.shape}.")
    outputs = [np.asarray(output, dtype=np.float32) for output in context_outputs]
    images = [np.asarray(image, dtype=np.float32) for image in context_images]
    if not outputs:
        raise InputError("no context pairs were given; pass at least one (image, output) pair.")
    if need_images and len(images) != len(outputs):
        raise InputError(
            f"{len(images)} context images but {len(outputs)} context outputs; they come in pairs."
        )
    for kind, arrays in (
        ("context output", outputs),
        ("context image", images if need_images else []),
    ):
        for index, array in enumerate(arrays):
            if array.shape != target.shape:
                raise InputError(
                    f"{kind} {index}: shape {array.shape} differs from the target {target.shape}; "
                    "resample the contexts to the target grid first."
                )
    return target, images, outputs


def _family(task_family: str) -> str:
    families = ("segmentation", "transformation", "enhancement")
    if task_family not in families:
        raise InputError(f"task_family must be one of {families}, got {task_family!r}.")
    return task_family


def context_mean(
    target_image: np.ndarray,
    context_images: Sequence[np.ndarray],
    context_outputs: Sequence[np.ndarray],
    *,
    spacing: Sequence[float],
    task_family: str,
) -> np.ndarray:
    """Voxel-wise mean of the context outputs; ``mean > 0.5`` for segmentation.

    Returns:
        ``(X, Y, Z)`` float32; a 0/1 mask for segmentation.
    """
    family = _family(task_family)
    _, _, outputs = _check_inputs(target_image, context_images, context_outputs, need_images=False)
    mean = np.mean(np.stack(outputs), axis=0)
    if family == "segmentation":
        return (mean > 0.5).astype(np.float32)
    return mean.astype(np.float32)


context_mean.task_families = ("segmentation", "transformation", "enhancement")  # type: ignore[attr-defined]


def identity(
    target_image: np.ndarray,
    context_images: Sequence[np.ndarray],
    context_outputs: Sequence[np.ndarray],
    *,
    spacing: Sequence[float],
    task_family: str,
) -> np.ndarray:
    """The target input itself: the do-nothing bar for enhancement (and transformation) tasks.

    Raises:
        InputError: for segmentation, where an image is not a mask.
    """
    if _family(task_family) == "segmentation":
        raise InputError("the identity baseline applies to image tasks, not segmentation.")
    target = np.asarray(target_image, dtype=np.float32)
    if target.ndim != 3:
        raise InputError(f"target_image must be 3-D (X, Y, Z), got shape {target.shape}.")
    return target.copy()


identity.task_families = ("transformation", "enhancement")  # type: ignore[attr-defined]


def _to_sitk(array: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    # SimpleITK indexes arrays (z, y, x): transpose so ITK's x is our first array axis.
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def _from_sitk(image: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def _min_max(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return ((array - low) / (high - low + 1e-8)).astype(np.float32)


def _shrink_factor(shape: Sequence[int], largest: int, min_size: int) -> int:
    factor = largest
    while factor > 1 and min(shape) // factor < min_size:
        factor //= 2
    return factor


def register_to_target(
    target_image: np.ndarray,
    moving_image: np.ndarray,
    *,
    spacing: Sequence[float],
    demons_iterations: int = 30,
    demons_sigma: float = 1.5,
    affine_iterations: int = 100,
    num_threads: int = 2,
) -> sitk.Transform:
    """Register ``moving_image`` to ``target_image`` (affine, then demons); deterministic.

    Both images are min-max normalised. The affine stage minimises mean squares over all voxels
    (no random sampling) on images shrunk up to 4×, starting from aligned centres of mass. The
    demons stage (fast symmetric forces, field smoothing ``demons_sigma`` voxels) runs on images
    shrunk up to 2× after histogram matching, so contrast differences between subjects of the same
    modality do not drive the field. ``num_threads`` is fixed because ITK's reductions depend on
    the thread count; the same inputs and settings give the same transform.

    Returns:
        A transform mapping target physical points to moving physical points (ITK convention),
        usable with ``sitk.Resample(moving, target, transform, ...)``.
    """
    fixed = _to_sitk(_min_max(np.asarray(target_image, dtype=np.float32)), spacing)
    moving = _to_sitk(_min_max(np.asarray(moving_image, dtype=np.float32)), spacing)
    shape = np.asarray(target_image).shape

    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(num_threads)
    method.SetMetricAsMeanSquares()
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-4,
        numberOfIterations=affine_iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    affine_shrink = _shrink_factor(shape, 4, 16)
    method.SetShrinkFactorsPerLevel([affine_shrink])
    method.SetSmoothingSigmasPerLevel([affine_shrink / 2.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    affine = method.Execute(fixed, moving)
    if demons_iterations <= 0:
        return affine

    demons_shrink = _shrink_factor(shape, 2, 24)
    fixed_small = sitk.Shrink(fixed, [demons_shrink] * 3) if demons_shrink > 1 else fixed
    moving_small = sitk.Resample(moving, fixed_small, affine, sitk.sitkLinear, 0.0)
    moving_small = sitk.HistogramMatching(
        moving_small, fixed_small, numberOfHistogramLevels=64, numberOfMatchPoints=7
    )
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfThreads(num_threads)
    demons.SetNumberOfIterations(int(demons_iterations))
    demons.SetStandardDeviations(float(demons_sigma))
    field = demons.Execute(fixed_small, moving_small)
    displacement = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    # ITK composite transforms apply the last-added first: x -> affine(x + u(x)).
    return sitk.CompositeTransform([affine, displacement])


def multi_atlas(
    target_image: np.ndarray,
    context_images: Sequence[np.ndarray],
    context_outputs: Sequence[np.ndarray],
    *,
    spacing: Sequence[float],
    task_family: str,
    demons_iterations: int = 30,
    num_threads: int = 2,
) -> np.ndarray:
    """Multi-atlas fusion: register every context to the target, warp its output, fuse.

    Transforms are cached per (target image, context image) pair (see
    :func:`clear_registration_cache`); the registration is deterministic, so reuse changes nothing.

    Segmentation: outputs warped with nearest neighbour, then majority vote (a voxel is
    foreground when more than half of the atlases say so; ties go to background). Image tasks:
    outputs warped linearly, then averaged.

    Args:
        target_image: ``(X, Y, Z)``.
        context_images: k arrays ``(X, Y, Z)`` on the target grid.
        context_outputs: k arrays ``(X, Y, Z)``; masks for segmentation.
        spacing: voxel size in mm.
        task_family: ``"segmentation"``, ``"transformation"`` or ``"enhancement"``.
        demons_iterations: deformable iterations per atlas (0: affine only).
        num_threads: ITK threads (fixed for reproducibility).

    Returns:
        ``(X, Y, Z)`` float32; a 0/1 mask for segmentation.
    """
    family = _family(task_family)
    target, images, outputs = _check_inputs(
        target_image, context_images, context_outputs, need_images=True
    )
    reference = _to_sitk(target, spacing)
    warped = []
    target_digest = _digest(target)
    for image, output in zip(images, outputs, strict=True):
        key = (
            target_digest,
            _digest(image),
            tuple(float(s) for s in spacing),
            int(demons_iterations),
            int(num_threads),
        )
        transform = _REGISTRATION_CACHE.get(key)
        if transform is None:
            transform = register_to_target(
                target,
                image,
                spacing=spacing,
                demons_iterations=demons_iterations,
                num_threads=num_threads,
            )
            _REGISTRATION_CACHE[key] = transform
            while len(_REGISTRATION_CACHE) > _REGISTRATION_CACHE_SIZE:
                _REGISTRATION_CACHE.popitem(last=False)
        else:
            _REGISTRATION_CACHE.move_to_end(key)
        if family == "segmentation":
            moving = _to_sitk((output > 0.5).astype(np.uint8), spacing)
            interpolator = sitk.sitkNearestNeighbor
        else:
            moving = _to_sitk(output.astype(np.float32), spacing)
            interpolator = sitk.sitkLinear
        resampled = sitk.Resample(moving, reference, transform, interpolator, 0.0)
        warped.append(_from_sitk(resampled).astype(np.float32))
    fused = np.mean(np.stack(warped), axis=0)
    if family == "segmentation":
        return (fused > 0.5).astype(np.float32)
    return fused.astype(np.float32)


multi_atlas.task_families = ("segmentation", "transformation", "enhancement")  # type: ignore[attr-defined]
