"""Old home of :class:`~medverse.io.context.Context`, kept for one release.

``Context`` and its helpers moved to :mod:`medverse.io.context`, beside ``ContextPair``; import
them from there (or ``medverse.Context``).
"""

from __future__ import annotations

from medverse.io.context import (
    TASKS,
    Context,
    dataset_label_names,
    looks_like_labels,
    swapped_pair,
)

__all__ = ["Context", "TASKS", "dataset_label_names", "looks_like_labels", "swapped_pair"]
