"""What a user hands over, and bringing it onto the target's grid.

Read and write volumes with their affine (:mod:`medverse.io.volume`), hold the context pairs of a
query (:mod:`medverse.io.context`: ``ContextPair``, ``Context``) and bring them onto a target's
grid (:mod:`medverse.io.alignment`). ``normalize_intensity`` lives in :mod:`medverse.intensity`.
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
    "Context",
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
    "ALIGN_MODES": "medverse.io.alignment",
    "INTERPOLATIONS": "medverse.io.alignment",
    "align_pair": "medverse.io.alignment",
    "align_to_target": "medverse.io.alignment",
    "OUTPUT_KINDS": "medverse.io.context",
    "Context": "medverse.io.context",
    "ContextPair": "medverse.io.context",
    "normalize_intensity": "medverse.intensity",
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
