"""Datasets of cases in memory and mixes of datasets.

Several datasets are mixed with :class:`DatasetMix`; :class:`InMemoryDataset` wraps ready
:class:`~medverse.data.cases.Case` objects (tests, synthetic data).

This module used to hold the nnU-Net raw layout, preprocessing and the ``Case`` record too. They
now live in :mod:`medverse.data.nnunet_raw` (:class:`~medverse.data.nnunet_raw.NnUNetDataset`,
the readers, the cache), :mod:`medverse.data.preprocess`
(:class:`~medverse.data.preprocess.PreprocessConfig`) and :mod:`medverse.data.cases`
(:class:`~medverse.data.cases.Case`); their names are re-exported here for one release.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from medverse.errors import InputError

# Old home of these names, re-exported for one release (import them from their modules).
from .cases import Case
from .nnunet_raw import CACHE_VERSION as CACHE_VERSION
from .nnunet_raw import NnUNetDataset
from .nnunet_raw import _read_image as _read_image
from .nnunet_raw import _read_shape as _read_shape
from .preprocess import PreprocessConfig
from .preprocess import _as_label_dtype as _as_label_dtype

__all__ = [
    "Case",
    "DatasetMix",
    "InMemoryDataset",
    "NnUNetDataset",
    "PreprocessConfig",
]

# --------------------------------------------------------------------------------------------
# In-memory datasets and mixes
# --------------------------------------------------------------------------------------------


class InMemoryDataset:
    """Cases already in memory, with the attributes :class:`~medverse.data.episodes.EpisodeSampler` uses.

    Args:
        cases: the cases (same channel names).
        name: dataset name.
        weight: sampling weight in a :class:`DatasetMix`.
        labels: label ids segmentation tasks may use (default: every non-zero id of
            ``cases[0].label_names``).
        brain_mask_from_labels: see :class:`~medverse.data.nnunet_raw.NnUNetDataset`.

    Example:
        >>> from medverse.data.phantoms import make_subject
        >>> subject = make_subject((8, 8, 8), num_classes=2, num_modalities=1, seed=0)
        >>> case = Case("s0", subject.images, subject.labels, ("T1",), {0: "bg", 1: "body", 2: "x"}, (1.0, 1.0, 1.0))
        >>> len(InMemoryDataset([case, case]))
        2
    """

    def __init__(
        self,
        cases: Sequence[Case],
        *,
        name: str = "in_memory",
        weight: float = 1.0,
        labels: Sequence[int] | None = None,
        brain_mask_from_labels: bool = False,
    ):
        if not cases:
            raise InputError(f"dataset '{name}' has no case")
        if not (math.isfinite(weight) and weight > 0):
            raise InputError(f"dataset '{name}': weight must be a positive number, got {weight}")
        self.cases = tuple(cases)
        self.name = name
        self.weight = float(weight)
        self.channel_names = tuple(cases[0].channel_names)
        for case in self.cases:
            if tuple(case.channel_names) != self.channel_names or case.images.shape[0] != len(
                self.channel_names
            ):
                raise InputError(
                    f"dataset '{name}': case '{case.name}' has channels {case.channel_names} "
                    f"({case.images.shape[0]} images), expected {self.channel_names}"
                )
        self.label_names = dict(cases[0].label_names)
        known = sorted(k for k in self.label_names if k != 0)
        if labels is None:
            self.label_ids = tuple(known)
        else:
            unknown = sorted(set(labels) - set(known))
            if unknown:
                raise InputError(f"dataset '{name}': unknown label ids {unknown}; known {known}")
            self.label_ids = tuple(sorted(set(labels)))
        self.labeled = tuple(case.labels is not None for case in self.cases)
        self.case_names = tuple(case.name for case in self.cases)
        self.brain_mask_from_labels = brain_mask_from_labels

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> Case:
        return self.load_case(index)

    def load_case(self, index: int) -> Case:
        return self.cases[index]

    @property
    def labeled_indices(self) -> tuple[int, ...]:
        return tuple(i for i, has in enumerate(self.labeled) if has)

    def __repr__(self) -> str:
        return (
            f"InMemoryDataset(name={self.name!r}, cases={len(self)}, channels={self.channel_names})"
        )


class DatasetMix:
    """Several datasets sampled by weight (episodes draw a dataset first, METHOD.md §4).

    Args:
        datasets: :class:`~medverse.data.nnunet_raw.NnUNetDataset` or :class:`InMemoryDataset`
            objects.
        weights: one positive weight per dataset; default each dataset's ``weight``. Normalised to
            probabilities.

    Example:
        >>> mix = DatasetMix([a, b], weights=[3, 1])  # doctest: +SKIP
        >>> mix.probabilities  # doctest: +SKIP
        (0.75, 0.25)
    """

    def __init__(self, datasets: Sequence, *, weights: Sequence[float] | None = None):
        self.datasets = tuple(datasets)
        if not self.datasets:
            raise InputError("DatasetMix needs at least one dataset")
        raw = (
            [float(ds.weight) for ds in self.datasets]
            if weights is None
            else [float(w) for w in weights]
        )
        if len(raw) != len(self.datasets):
            raise InputError(f"got {len(raw)} weights for {len(self.datasets)} datasets")
        if not all(math.isfinite(w) and w > 0 for w in raw):
            raise InputError(f"dataset weights must be positive numbers, got {raw}")
        total = sum(raw)
        self.probabilities = tuple(w / total for w in raw)
        names = [ds.name for ds in self.datasets]
        if len(set(names)) != len(names):
            raise InputError(f"dataset names must be unique in a mix, got {names}; pass name=...")

    def __len__(self) -> int:
        return len(self.datasets)

    def __getitem__(self, index: int):
        return self.datasets[index]

    def __iter__(self) -> Iterator:
        return iter(self.datasets)

    @property
    def num_cases(self) -> int:
        """Total number of cases over all datasets."""
        return sum(len(ds) for ds in self.datasets)

    def choose(self, rng: np.random.Generator, among: Sequence[int] | None = None) -> int:
        """Index of a dataset drawn by weight, optionally restricted to the indices ``among``."""
        candidates = list(range(len(self.datasets))) if among is None else list(among)
        if not candidates:
            raise InputError("no dataset to choose from")
        weights = np.asarray([self.probabilities[i] for i in candidates])
        return candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{ds.name}: {p:.3f}" for ds, p in zip(self.datasets, self.probabilities, strict=True)
        )
        return f"DatasetMix({parts})"
