"""File IO and context alignment.

Read and write volumes with their affine (:mod:`medverse.io.volume`), load context pairs,
normalise intensities and bring contexts onto a target's grid (:mod:`medverse.io.context`).
"""

from __future__ import annotations

from medverse import lazy_getattr

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

_LAZY = {
    "ALIGN_MODES": "medverse.io.context",
    "INTERPOLATIONS": "medverse.io.context",
    "OUTPUT_KINDS": "medverse.io.context",
    "ContextPair": "medverse.io.context",
    "align_pair": "medverse.io.context",
    "align_to_target": "medverse.io.context",
    "normalize_intensity": "medverse.io.context",
    "READABLE_EXTENSIONS": "medverse.io.volume",
    "VOLUME_KINDS": "medverse.io.volume",
    "WRITABLE_EXTENSIONS": "medverse.io.volume",
    "Volume": "medverse.io.volume",
    "label_names_path": "medverse.io.volume",
    "read_volume": "medverse.io.volume",
    "write_label_names": "medverse.io.volume",
    "write_volume": "medverse.io.volume",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
