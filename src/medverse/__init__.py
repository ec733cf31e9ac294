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

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("medverse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["load_model", "list_models", "Predictor", "Context", "Prediction"]

_LAZY = {
    "load_model": "medverse.checkpoint.factory",
    "list_models": "medverse.checkpoint.model_registry",
    "Predictor": "medverse.inference.predictor",
    "Prediction": "medverse.inference.predictor",
    "Context": "medverse.io.context",
}


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of a package that re-exports lazily.

    A public name of ``table`` (name -> module) is imported from its module on first use, and so
    is a submodule of ``package``; so importing one module of a package runs none of the others,
    and ``medverse --help`` does not load torch. Used by this package and by the ``__init__`` of
    ``medverse.data``, ``io``, ``evaluation`` and ``training``:
    ``__getattr__ = lazy_getattr(__name__, _LAZY)``.
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_getattr(__name__, _LAZY)
