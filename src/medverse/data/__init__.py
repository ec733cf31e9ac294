"""Training data: nnU-Net raw datasets, synthetic data, augmentation and episodes (METHOD.md §4)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__all__ = [
    "DEFAULT_TASK_WEIGHTS",
    "ENHANCEMENT_OPS",
    "BiasField",
    "Case",
    "DatasetMix",
    "Episode",
    "EpisodeDataset",
    "EpisodeSampler",
    "GaussianNoise",
    "InMemoryDataset",
    "Inpainting",
    "IntensityAugmentation",
    "LowResolution",
    "NnUNetDataset",
    "PreprocessConfig",
    "RandomBiasField",
    "RandomGaussianNoise",
    "RandomInpainting",
    "RandomIntensityAugmentation",
    "RandomLowResolution",
    "RandomSaltAndPepper",
    "RandomSpatialAugmentation",
    "SaltAndPepper",
    "SpatialAugmentation",
    "SyntheticSubject",
    "collate_episodes",
    "crop_or_resize_to_window",
    "default_enhancements",
    "make_label_map",
    "make_subject",
    "perlin_noise",
    "render_modality",
    "rotate",
    "window_start",
    "write_synthetic_dataset",
]

_LAZY = {
    "IntensityAugmentation": "medverse.data.augment",
    "RandomIntensityAugmentation": "medverse.data.augment",
    "RandomSpatialAugmentation": "medverse.data.augment",
    "SpatialAugmentation": "medverse.data.augment",
    "crop_or_resize_to_window": "medverse.data.augment",
    "window_start": "medverse.data.augment",
    "Case": "medverse.data.datasets",
    "DatasetMix": "medverse.data.datasets",
    "InMemoryDataset": "medverse.data.datasets",
    "NnUNetDataset": "medverse.data.datasets",
    "PreprocessConfig": "medverse.data.datasets",
    "DEFAULT_TASK_WEIGHTS": "medverse.data.episodes",
    "Episode": "medverse.data.episodes",
    "EpisodeDataset": "medverse.data.episodes",
    "EpisodeSampler": "medverse.data.episodes",
    "collate_episodes": "medverse.data.episodes",
    "rotate": "medverse.data.episodes",
    "ENHANCEMENT_OPS": "medverse.data.synthesis",
    "BiasField": "medverse.data.synthesis",
    "GaussianNoise": "medverse.data.synthesis",
    "Inpainting": "medverse.data.synthesis",
    "LowResolution": "medverse.data.synthesis",
    "RandomBiasField": "medverse.data.synthesis",
    "RandomGaussianNoise": "medverse.data.synthesis",
    "RandomInpainting": "medverse.data.synthesis",
    "RandomLowResolution": "medverse.data.synthesis",
    "RandomSaltAndPepper": "medverse.data.synthesis",
    "SaltAndPepper": "medverse.data.synthesis",
    "SyntheticSubject": "medverse.data.synthesis",
    "default_enhancements": "medverse.data.synthesis",
    "make_label_map": "medverse.data.synthesis",
    "make_subject": "medverse.data.synthesis",
    "perlin_noise": "medverse.data.synthesis",
    "render_modality": "medverse.data.synthesis",
    "write_synthetic_dataset": "medverse.data.synthesis",
}


def __getattr__(name: str) -> Any:
    """Import a public name or a submodule on first use.

    So importing one module of the package (``medverse.evaluation.metrics`` from training, say)
    runs none of the others.
    """
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
