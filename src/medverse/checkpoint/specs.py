"""Old home of the table of named models, kept for one release.

The table (``ModelSpec``, ``register_model``, ``list_models``, ``get_spec``) moved to
:mod:`medverse.checkpoint.model_registry`; import it from there.
"""

from __future__ import annotations

from medverse.checkpoint.model_registry import ModelSpec, get_spec, list_models, register_model

__all__ = ["ModelSpec", "get_spec", "list_models", "register_model"]
