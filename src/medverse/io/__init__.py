"""File IO and context alignment.

Read and write volumes with their affine (:mod:`medverse.io.volume`), load context pairs,
normalise intensities and bring contexts onto a target's grid (:mod:`medverse.io.context`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

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
