"""Level plans of next-scale autoregressive inference (pure functions, no tensors).

Two level rules (``level_rule``; :class:`~medverse.inference.driver.InferenceConfig` sets it
through ``compat``, which also chooses how contexts are aligned):

* ``released`` — the authors' code: ``T = ceil(log2(M / W)) + 1`` with ``M`` the largest entry
  of the whole input shape (batch and channel included), every axis zero-padded at its end to a
  multiple of ``2**(T-1)``, level ``t`` at ``padded / 2**(T-t)``, and *any* level with an axis
  below ``W`` squashed to exactly ``W**3`` (anisotropically) and resized back.
* ``medverse`` (default) — per axis, never squashed. An axis of ``n`` voxels has its own level
  count ``k = max(1, ceil(log2(n / W)) + 1)``; ``T`` is the largest ``k``. At level ``t`` the axis
  is down-sampled by ``2**min(T - t, k - 1)`` (rounded up), so an axis already at or below the
  window is never down-sampled, and a long axis stops shrinking once it fits one window. Level 1
  therefore fits in one window (a global pass), the last level is the input shape exactly (no
  padding, crop-back is the identity), and any level axis below ``W`` is zero-padded to the
  window inside the sliding-window pass instead of being stretched.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from medverse.errors import InputError

__all__ = ["Level", "LevelPlan", "plan_levels", "LEVEL_RULES", "PLAN_RULES"]

#: The level rules: ours (per axis, never squash) and the authors'.
LEVEL_RULES = ("medverse", "released")
#: Old name of :data:`LEVEL_RULES`, kept for one release.
PLAN_RULES = LEVEL_RULES


@dataclass(frozen=True)
class Level:
    """One level: its shape, and the shape the network is run on (``squashed`` → ``W**3``)."""

    index: int
    shape: tuple[int, int, int]
    squashed: bool = False


@dataclass(frozen=True)
class LevelPlan:
    """All levels, coarse to fine, for one input shape.

    Attributes:
        input_shape: spatial shape of the target.
        padded_shape: shape after end-padding (equals ``input_shape`` for the default rule).
        levels: coarse to fine; ``levels[-1].shape == padded_shape``.
        window: window edge ``W``.
        level_rule: ``"medverse"`` or ``"released"``.
    """

    input_shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    levels: tuple[Level, ...]
    window: int
    level_rule: str

    @property
    def rule(self) -> str:
        """Old name of :attr:`level_rule`, kept for one release."""
        return self.level_rule

    @property
    def num_levels(self) -> int:
        return len(self.levels)


def _released(shape: tuple[int, int, int], window: int, leading: tuple[int, ...]) -> LevelPlan:
    biggest = max((*leading, *shape))
    num = int(math.ceil(math.log2(biggest / window)) + 1)
    num = max(num, 1)  # the released code returns None for M <= W/2; we run one level
    mult = 2 ** (num - 1)
    padded = tuple(int(math.ceil(n / mult) * mult) for n in shape)
    levels = []
    for t in range(1, num + 1):
        level = tuple(p // 2 ** (num - t) for p in padded)
        levels.append(Level(t, level, squashed=any(n < window for n in level)))  # type: ignore[arg-type]
    return LevelPlan(shape, padded, tuple(levels), window, "released")  # type: ignore[arg-type]


def _per_axis(shape: tuple[int, int, int], window: int) -> LevelPlan:
    own = [max(1, int(math.ceil(math.log2(n / window))) + 1) if n > window else 1 for n in shape]
    num = max(own)
    levels = []
    for t in range(1, num + 1):
        level = tuple(int(math.ceil(n / 2 ** min(num - t, k - 1))) for n, k in zip(shape, own))
        levels.append(Level(t, level))  # type: ignore[arg-type]
    return LevelPlan(shape, shape, tuple(levels), window, "medverse")


def plan_levels(
    shape: tuple[int, ...],
    window: int,
    *,
    level_rule: str = "medverse",
    leading: tuple[int, ...] = (1, 1),
    rule: str | None = None,
) -> LevelPlan:
    """Plan the coarse-to-fine levels for a volume.

    Args:
        shape: spatial shape ``(X, Y, Z)``.
        window: the network's window edge ``W``.
        level_rule: ``"medverse"`` (per axis, never squash) or ``"released"``.
        leading: batch and channel sizes; the released level count includes them in its max.
        rule: old name of ``level_rule``, kept for one release (a ``DeprecationWarning``).

    Returns:
        The :class:`LevelPlan`.

    Example:
        >>> [lv.shape for lv in plan_levels((512, 512, 100), 128).levels]
        [(128, 128, 100), (256, 256, 100), (512, 512, 100)]
    """
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise InputError(f"expected a 3-D spatial shape of positive sizes, got {tuple(shape)}")
    if rule is not None:
        warnings.warn(
            "plan_levels(rule=...) is now plan_levels(level_rule=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        level_rule = rule
    if level_rule not in LEVEL_RULES:
        raise InputError(f"unknown level rule {level_rule!r}; choose one of {LEVEL_RULES}")
    shape3 = tuple(int(n) for n in shape)
    if level_rule == "released":
        return _released(shape3, window, tuple(leading))  # type: ignore[arg-type]
    return _per_axis(shape3, window)  # type: ignore[arg-type]
