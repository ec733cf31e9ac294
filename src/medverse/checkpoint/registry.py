"""Old home of :func:`~medverse.checkpoint.factory.load_model`, kept for one release.

This module held the factory while the table of named models was in ``specs.py``. The factory
(``load_model``, ``released_weights_help``, ``RELEASED_REPOSITORY``) moved to
:mod:`medverse.checkpoint.factory`; the table (``ModelSpec``, ``register_model``,
``list_models``, ``get_spec``) is :mod:`medverse.checkpoint.model_registry`. Import them from
there (or ``medverse.load_model``, ``medverse.list_models``).
"""

from __future__ import annotations

from medverse.checkpoint.factory import RELEASED_REPOSITORY, load_model, released_weights_help
from medverse.checkpoint.model_registry import ModelSpec, get_spec, list_models, register_model

__all__ = [
    "ModelSpec",
    "register_model",
    "list_models",
    "get_spec",
    "load_model",
    "RELEASED_REPOSITORY",
    "released_weights_help",
]
