"""medverse: universal in-context learning for 3D medical images.

Give a target volume and a few example pairs from other subjects (image + mask, image + other
modality, noisy + clean image) and get the full-resolution output of the same task.

Example:
    >>> import medverse
    >>> model = medverse.load_model("medverse-small")  # doctest: +SKIP
    >>> context = medverse.Context.from_files([("img_1.nii.gz", "seg_1.nii.gz")])  # doctest: +SKIP
    >>> medverse.Predictor(model).predict("target.nii.gz", context).save("pred.nii.gz")  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("medverse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["load_model", "list_models", "Predictor", "Context", "Prediction"]

_LAZY = {
    "load_model": "medverse.checkpoint.registry",
    "list_models": "medverse.checkpoint.registry",
    "Predictor": "medverse.inference.predictor",
    "Prediction": "medverse.inference.predictor",
    "Context": "medverse.io.context_set",
}


def __getattr__(name: str) -> Any:
    """Import the public names on first use, so ``medverse --help`` does not load torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medverse' has no attribute {name!r}")
