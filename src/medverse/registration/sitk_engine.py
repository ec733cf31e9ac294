"""The SimpleITK engine (``engine="sitk"``).

``"affine"`` is rigid then affine, Mattes mutual information, on images block-averaged to at
most 48 voxels per axis, one thread, fixed sampling seed (the historical ``--align affine``);
``"deformable"`` adds fast symmetric-forces demons after histogram matching.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from medverse.intensity import normalize_intensity
from medverse.registration.images import (
    _CLIP,
    _lps_world_to_ras,
    _overlap_mask,
    _registration_grids,
)
from medverse.registration.settings import RegistrationSettings
from medverse.registration.transform import resample_to_grid

if TYPE_CHECKING:
    from medverse.io.volume import Volume

logger = logging.getLogger(__name__)

_SITK_SEED = 1234  # SimpleITK metric sampling seed
_SITK_MAX_SIZE = 48  # voxels per axis the SimpleITK affine metric sees at its finest level


def _to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    from medverse.io.volume import _to_sitk as to_sitk  # one copy; imported late (no cycle)

    return to_sitk(array, affine)


def _from_sitk_array(image: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0), np.float32)


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
