"""Level plans: property tests over shapes 1..600 per axis."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medverse.inference.pyramid import plan_levels

sizes = st.integers(min_value=1, max_value=600)


@settings(max_examples=300, deadline=None)
@given(sizes, sizes, sizes, st.sampled_from([32, 64, 128]))
def test_default_rule(x: int, y: int, z: int, window: int) -> None:
    shape = (x, y, z)
    plan = plan_levels(shape, window)
    assert plan.levels[-1].shape == shape  # full resolution, no padding: crop-back is exact
    assert plan.padded_shape == shape
    assert not any(lv.squashed for lv in plan.levels)
    assert all(n <= window for n in plan.levels[0].shape)  # level 1 is one global window
    for prev, nxt in zip(plan.levels, plan.levels[1:]):
        for a, b in zip(prev.shape, nxt.shape):
            assert a <= b <= 2 * a  # each level at most doubles an axis
    for lv in plan.levels:
        for m, n in zip(lv.shape, shape):
            # an axis is never down-sampled below half a window: it is padded to the window
            assert m == n or m > window // 2
    expected = max(1, max(math.ceil(math.log2(n / window)) + 1 if n > window else 1 for n in shape))
    assert plan.num_levels == expected


@settings(max_examples=300, deadline=None)
@given(sizes, sizes, sizes)
def test_released_rule(x: int, y: int, z: int) -> None:
    plan = plan_levels((x, y, z), 128, level_rule="released")
    t = plan.num_levels
    assert t == max(1, math.ceil(math.log2(max(x, y, z, 1) / 128)) + 1)
    assert all(p % 2 ** (t - 1) == 0 and p >= n for p, n in zip(plan.padded_shape, (x, y, z)))
    assert plan.levels[-1].shape == plan.padded_shape
    for lv in plan.levels:
        assert lv.squashed == any(n < 128 for n in lv.shape)


def test_examples_from_the_issue() -> None:
    assert [lv.shape for lv in plan_levels((512, 512, 100), 128).levels] == [
        (128, 128, 100),
        (256, 256, 100),
        (512, 512, 100),
    ]
    assert plan_levels((300, 260, 60), 128).levels[-1].shape == (300, 260, 60)
    released = plan_levels((200, 180, 160), 128, level_rule="released")
    assert [lv.squashed for lv in released.levels] == [True, False]


def test_level_rule_is_one_name() -> None:
    """``level_rule`` everywhere; ``compat`` is the wider method switch that sets it."""
    from medverse.inference import pyramid
    from medverse.inference.driver import InferenceConfig
    from medverse.training import config

    assert pyramid.PLAN_RULES is pyramid.LEVEL_RULES is config.LEVEL_RULES
    plan = plan_levels((200, 180, 160), 128, level_rule="released")
    assert plan.level_rule == plan.rule == "released"
    with pytest.warns(DeprecationWarning, match="level_rule"):
        old = plan_levels((200, 180, 160), 128, rule="released")
    assert old == plan
    for compat in pyramid.LEVEL_RULES:
        assert InferenceConfig(compat=compat).level_rule == compat
