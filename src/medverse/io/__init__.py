"""File IO and context alignment.

Read and write volumes with their affine (:mod:`medverse.io.volume`), load context pairs,
normalise intensities and bring contexts onto a target's grid (:mod:`medverse.io.context`).
"""

from __future__ import annotations

from medverse.io.context import (
    ALIGN_MODES,
    INTERPOLATIONS,
    OUTPUT_KINDS,
    ContextPair,
    align_pair,
    align_to_target,
    normalize_intensity,
)
from medverse.io.volume import (
    READABLE_EXTENSIONS,
    VOLUME_KINDS,
    WRITABLE_EXTENSIONS,
    Volume,
    label_names_path,
    read_volume,
    write_label_names,
    write_volume,
)

__all__ = [
    "ALIGN_MODES",
    "INTERPOLATIONS",
    "OUTPUT_KINDS",
    "READABLE_EXTENSIONS",
    "VOLUME_KINDS",
    "WRITABLE_EXTENSIONS",
    "ContextPair",
    "Volume",
    "align_pair",
    "align_to_target",
    "label_names_path",
    "normalize_intensity",
    "read_volume",
    "write_label_names",
    "write_volume",
]
