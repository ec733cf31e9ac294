"""The ANTs engine (``engine="ants"``, antspyx).

``"affine"`` is ANTs' ``Affine`` (global correlation, centre-of-mass initialisation);
``"deformable"`` adds SyN (local cross-correlation, radius 1) on top of that affine, restricted
to where the moving volume has data. Both run on block-averaged copies of the images with at
most :attr:`~medverse.registration.settings.RegistrationSettings.grid_voxels` voxels (2 mm
96x112x96 -> 4 mm, 1 mm 181x217x181 -> 4 mm) with a fixed random seed; the transform is then
applied at full resolution. Both metrics give the same result on any number of threads (Mattes
MI does not). ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process: it is set to
2 before antspyx is first used, unless already set.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medverse.errors import InputError
from medverse.registration.images import (
    _LPS_TO_RAS,
    _lps_world_to_ras,
    _overlap_mask,
    _registration_grids,
    _spacing,
)
from medverse.registration.settings import RegistrationSettings

if TYPE_CHECKING:
    from medverse.io.volume import Volume

_ANTS_LOCK = threading.Lock()  # the seed is process-wide
_THREADS_VARIABLE = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


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
