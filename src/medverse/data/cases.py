"""The record of one preprocessed training case.

A :class:`Case` is what every training dataset yields: the images of one subject with their
labels, spacing and affine. :class:`~medverse.data.nnunet_raw.NnUNetDataset` makes them from an
nnU-Net raw folder, :class:`~medverse.data.datasets.InMemoryDataset` wraps ready ones, and
:func:`~medverse.data.mni.make_mni_cases` and training's synthetic source build them in memory.
Not to be confused with :class:`medverse.evaluation.records.Case`, a held-out evaluation case.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["Case"]


@dataclass(frozen=True, eq=False)
class Case:
    """One preprocessed case.

    Attributes:
        name: case identifier (``"liver_007"``).
        images: ``(M, X, Y, Z)`` float32, one channel per modality.
        labels: ``(X, Y, Z)`` integer label map, or ``None`` for an unlabelled case.
        channel_names: ``M`` modality names from ``dataset.json``.
        label_names: label id -> name (background included).
        spacing: voxel size in mm after preprocessing.
        affine: 4x4 voxel-to-world (RAS) matrix after preprocessing.
        dataset: name of the dataset it came from.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    channel_names: tuple[str, ...]
    label_names: dict[int, str]
    spacing: tuple[float, float, float]
    affine: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))
    dataset: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        x, y, z = self.images.shape[1:]
        return int(x), int(y), int(z)
