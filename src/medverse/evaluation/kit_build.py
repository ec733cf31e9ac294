"""Kit subjects drawn at random, and the in-memory kit made of them.

Each subject is the MNI template pulled back through the kit's deformation
(:mod:`medverse.evaluation.kit_deformation`) by :func:`medverse.data.mni.build_mni_subject`, with
the kit's contrast and label rules, then given a mild bias field and noise; the enhancement tasks
get their degraded inputs. Deterministic for a given
:class:`~medverse.evaluation.kit_config.KitConfig`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medverse.data.mni import (
    AtlasStructure,
    BrainMask,
    Contrast,
    LabelRule,
    TissueMask,
    build_mni_subject,
    divide_by_peak,
)
from medverse.evaluation.kit_config import (
    _BIAS_LOG_AMPLITUDE,
    _DENOISE_SIGMA,
    AAL3_LABELS,
    KIT_SEED_NAMESPACE,
    KIT_TASKS,
    KitConfig,
    _describe,
    kit_affine,
)
from medverse.evaluation.kit_deformation import _draw_deformation, _min_jacobian, _pullback
from medverse.evaluation.records import EvaluationCase, TaskInfo

__all__ = ["EvaluationKit", "KitSubject", "build_kit"]

logger = logging.getLogger(__name__)


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


def _subject_rng(config: KitConfig, index: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([KIT_SEED_NAMESPACE, int(config.seed), index])
    )


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
        config: kit settings; defaults to
            :class:`~medverse.evaluation.kit_config.KitConfig` ``()`` (8 subjects, 2 mm,
            96×112×96).
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
