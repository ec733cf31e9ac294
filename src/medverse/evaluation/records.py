"""The records of the held-out protocol: tasks, cases, results per case and per run.

:class:`TaskInfo` (what a task is), :class:`EvaluationCase` (one subject's input and reference for one
task), :class:`EvaluationDataset` (what :func:`~medverse.evaluation.protocol.evaluate` needs from a
dataset), :class:`CaseResult` (one scored (task, target, draw, method)), :class:`Example` (slices
kept for the report's figures) and :class:`Results` (everything one run produced), plus the
:data:`Method` signature. Pure data: they run nothing; the protocol that fills them is
:mod:`medverse.evaluation.protocol`, the writer that reads them :mod:`medverse.evaluation.report`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medverse.errors import InputError
from medverse.evaluation.metrics import IMAGE_METRICS, SEGMENTATION_METRICS
from medverse.types import TASK_FAMILIES

__all__ = [
    "Case",
    "CaseResult",
    "EvaluationCase",
    "EvaluationDataset",
    "Example",
    "Method",
    "Results",
    "TaskInfo",
]


Method = Callable[..., Any]
"""``method(target_image, context_images, context_outputs, *, spacing, task_family) -> array``."""


@dataclass(frozen=True)
class TaskInfo:
    """What a task is.

    Args:
        name: task name, e.g. ``"hippocampus_aal"``.
        family: ``"segmentation"``, ``"transformation"`` or ``"enhancement"``.
        description: one line for reports.
        note: caveat shown next to this task's numbers in every report (e.g. the AAL fit note).
        data_range: intensity range for PSNR/SSIM of image tasks; ``None`` uses the reference's
            ``max - min`` per case.
        nsd_tolerance_mm: surface tolerance of NSD for segmentation tasks. Below the voxel size
            NSD only counts exactly coincident surface voxels; one voxel is a sensible floor.
    """

    name: str
    family: str
    description: str = ""
    note: str = ""
    data_range: float | None = None
    nsd_tolerance_mm: float = 1.0

    def __post_init__(self) -> None:
        if self.family not in TASK_FAMILIES:
            raise InputError(
                f"task {self.name!r}: family must be one of {TASK_FAMILIES}, got {self.family!r}."
            )


@dataclass(frozen=True, eq=False)
class EvaluationCase:
    """One subject's input and reference output for one task.

    Named apart from :class:`medverse.data.cases.Case`, one preprocessed training subject with
    all its channels and labels; this is one (subject, task) of an evaluation dataset. ``Case``
    is its old name, kept for one release.

    Args:
        subject_id: subject name.
        task: task name.
        image: method input, ``(X, Y, Z)`` float32.
        output: reference output, ``(X, Y, Z)``; a mask for segmentation.
        spacing: voxel size in mm, ``(sx, sy, sz)``.
        affine: 4x4 voxel-to-world matrix (RAS+, mm).
    """

    subject_id: str
    task: str
    image: np.ndarray
    output: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


#: Old name of :class:`EvaluationCase`, kept for one release.
Case = EvaluationCase


@runtime_checkable
class EvaluationDataset(Protocol):
    """What :func:`~medverse.evaluation.protocol.evaluate` needs from a dataset (the in-memory kit and kit folders provide it)."""

    @property
    def subject_ids(self) -> Sequence[str]: ...

    @property
    def tasks(self) -> Mapping[str, TaskInfo]: ...

    def load_case(self, subject_id: str, task: str) -> EvaluationCase: ...


@dataclass
class CaseResult:
    """One (task, target, draw, method) evaluation.

    ``metrics`` holds the metric values (NaN when undefined); ``reason`` says why a case failed or
    which empty-mask convention applied (``""`` otherwise). ``seconds`` is the method's wall time
    and is kept out of the deterministic CSV/JSON files by the report writer.
    """

    task: str
    family: str
    target: str
    method: str
    draw: int
    draw_seed: int | None
    contexts: tuple[str, ...]
    status: str
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = math.nan

    def as_row(self) -> dict[str, Any]:
        """Flat, deterministic dict (no timing) for CSV/JSON."""
        row: dict[str, Any] = {
            "task": self.task,
            "family": self.family,
            "target": self.target,
            "method": self.method,
            "draw": self.draw,
            "draw_seed": self.draw_seed,
            "contexts": ";".join(self.contexts),
            "status": self.status,
            "reason": self.reason,
        }
        names = SEGMENTATION_METRICS if self.family == "segmentation" else IMAGE_METRICS
        for name in names:
            row[name] = self.metrics.get(name, math.nan)
        return row


@dataclass(eq=False)
class Example:
    """Three orthogonal slices of one evaluated case, kept for the report's figures.

    Only slices are kept (not volumes), so a full run holds a few MB of examples. Each ``*_slices``
    is ``(volume[:, :, z], volume[:, y, :], volume[x, :, :])`` at ``centre`` = ``(x, y, z)``: for
    segmentation, the slices where the reference mask has the largest area (a bilateral structure
    shows up in every plane), else the volume centre. ``affine`` (voxel to world, RAS+ mm; default
    ``diag(spacing)``) gives the figures their orientation letters and slice positions;
    ``label_names`` (label value -> name) their legend. ``reference_slices`` is None when the case
    has no reference (image tasks then show prediction − input).
    """

    task: str
    family: str
    target: str
    method: str
    draw: int
    centre: tuple[int, int, int]
    image_slices: tuple[np.ndarray, np.ndarray, np.ndarray]
    reference_slices: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    prediction_slices: tuple[np.ndarray, np.ndarray, np.ndarray]
    spacing: tuple[float, float, float]
    affine: np.ndarray | None = None
    label_names: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_volumes(
        cls,
        info: TaskInfo,
        target: str,
        method: str,
        draw: int,
        image: np.ndarray,
        reference: np.ndarray | None,
        prediction: np.ndarray,
        spacing: Sequence[float],
        *,
        affine: np.ndarray | None = None,
        label_names: Mapping[int, str] | None = None,
    ) -> Example:
        """Cut the three slices out of ``(X, Y, Z)`` volumes.

        Args:
            affine: the volumes' voxel-to-world matrix (RAS+, mm); default ``diag(spacing)``.
            label_names: label value -> name for the legend; default ``{1: task name}`` for a
                binary reference, else ``"label N"`` in the figure.
        """
        mask = (
            np.asarray(reference) > 0.5
            if info.family == "segmentation" and reference is not None
            else None
        )
        if mask is not None and mask.any():
            x = int(np.argmax(mask.sum(axis=(1, 2))))
            y = int(np.argmax(mask.sum(axis=(0, 2))))
            z = int(np.argmax(mask.sum(axis=(0, 1))))
        else:
            x, y, z = (int(c) // 2 for c in np.shape(prediction))

        if label_names is not None:
            names = {int(value): str(name) for value, name in label_names.items()}
        elif mask is not None and np.isin(np.asarray(reference), (0, 1)).all():
            names = {1: info.name}
        else:
            names = {}

        def cut(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            volume = np.asarray(volume, dtype=np.float32)
            return (volume[:, :, z].copy(), volume[:, y, :].copy(), volume[x, :, :].copy())

        return cls(
            info.name,
            info.family,
            target,
            method,
            draw,
            (x, y, z),
            cut(image),
            None if reference is None else cut(reference),
            cut(prediction),
            (float(spacing[0]), float(spacing[1]), float(spacing[2])),
            None if affine is None else np.asarray(affine, dtype=np.float64).copy(),
            names,
        )


@dataclass
class Results:
    """Everything one :func:`~medverse.evaluation.protocol.evaluate` call produced.

    Attributes:
        config: the protocol settings, the dataset description and the method names.
        versions: package versions (medverse, numpy, monai, torch, SimpleITK).
        model_hash: identifier of the evaluated weights, given by the caller.
        tasks: the :class:`TaskInfo` of every evaluated task, by name.
        records: one :class:`CaseResult` per (task, target, draw, method).
        examples: arrays for figures.
    """

    config: dict[str, Any]
    versions: dict[str, str]
    model_hash: str | None
    tasks: dict[str, TaskInfo]
    records: list[CaseResult]
    examples: list[Example] = field(default_factory=list)

    def failed(self) -> list[CaseResult]:
        """The records whose status is ``"failed"``."""
        return [record for record in self.records if record.status == "failed"]
