"""What a registration may be asked for: the engines, the kinds, and the settings.

Every field of :class:`RegistrationSettings` is part of the cache key
(:func:`medverse.registration.cache.registration_key`).
"""

from __future__ import annotations

from dataclasses import dataclass

from medverse.errors import InputError
from medverse.validation import check_option

__all__ = ["ENGINES", "REGISTRATION_KINDS", "RegistrationSettings"]

ENGINES = ("ants", "sitk")
"""Registration back ends: antspyx (``"ants"``) or SimpleITK (``"sitk"``)."""
REGISTRATION_KINDS = ("affine", "deformable")
"""``"affine"``: 12 parameters; ``"deformable"``: that affine, then a dense displacement field."""


@dataclass(frozen=True)
class RegistrationSettings:
    """Knobs of :func:`~medverse.registration.driver.register`; every field is part of the cache
    key.

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
