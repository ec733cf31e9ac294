"""Intensity scaling to [0, 1]: min-max, optionally after clipping percentiles.

Every path that runs the network (:mod:`medverse.inference.pipeline`, the registration-guided pass,
the multi-atlas baselines) scales its target and context volumes with :func:`normalize_intensity`,
and registration scales both images with it (clipping the 0.5-99.5 percentiles) before aligning
them. Training data (synthetic subjects, episodes) is scaled with :func:`minmax_scale`, the same
min-max without input checks and with ``1e-8`` added to the range rather than used as its floor:
the two differ in the last bits (more for ranges near ``1e-8``), so each keeps its numbers.

Example:
    >>> import numpy as np
    >>> normalize_intensity(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medverse.errors import InputError
from medverse.validation import check_finite

__all__ = ["minmax_scale", "normalize_intensity"]


def normalize_intensity(
    array: Any,
    *,
    clip_percentiles: tuple[float, float] | None = None,
    name: str = "array",
) -> np.ndarray:
    """Min-max normalise one volume to [0, 1], optionally clipping percentiles first.

    Computes ``(v - min) / max(max - min, 1e-8)`` after clipping to the given percentiles, so a
    constant volume maps to zeros rather than dividing by zero.

    Args:
        array: any-shape NumPy array or torch tensor, e.g. ``(X, Y, Z)``.
        clip_percentiles: ``(low, high)`` in [0, 100], e.g. ``(0.5, 99.5)`` for CT; ``None``
            clips nothing.
        name: how messages refer to the array.

    Returns:
        A new float32 array of the same shape with values in [0, 1].

    Raises:
        InputError: empty array, NaN/Inf values, or invalid percentiles.

    Example:
        >>> normalize_intensity(np.array([-1000.0, 0.0, 1000.0]))
        array([0. , 0.5, 1. ], dtype=float32)
    """
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    data = np.asarray(array, dtype=np.float32)
    if data.size == 0:
        raise InputError(f"'{name}': cannot normalise an empty array (shape {data.shape})")
    check_finite(data, name)
    if clip_percentiles is not None:
        low_q, high_q = _check_percentiles(clip_percentiles)
        low, high = np.percentile(data, [low_q, high_q])
        data = np.clip(data, low, high)
    low, high = float(data.min()), float(data.max())
    return ((data - low) / max(high - low, 1e-8)).astype(np.float32, copy=False)


def minmax_scale(volume: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] as training data is scaled: ``(v - min) / (max - min + 1e-8)``.

    No input checks (NaN stays NaN); a constant volume maps to zeros. Inputs a user hands over
    go through :func:`normalize_intensity` instead, which checks them and divides by
    ``max(max - min, 1e-8)``.

    Args:
        volume: any-shape array, e.g. ``(X, Y, Z)``.

    Returns:
        A new float32 array of the same shape.

    Example:
        >>> minmax_scale(np.array([-1.0, 0.0, 3.0])).tolist()
        [0.0, 0.25, 1.0]
    """
    volume = np.asarray(volume, dtype=np.float32)
    low, high = float(volume.min()), float(volume.max())
    return ((volume - low) / (high - low + 1e-8)).astype(np.float32)


def _check_percentiles(clip_percentiles: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in clip_percentiles)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"clip_percentiles must be a pair (low, high), got {clip_percentiles!r}"
        ) from error
    if not 0.0 <= low < high <= 100.0:
        raise InputError(
            f"clip_percentiles must satisfy 0 <= low < high <= 100, got ({low:g}, {high:g})"
        )
    return low, high
