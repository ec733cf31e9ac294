"""Tests for medverse.model.fusion: ResidualUnit + blockwise cross-attention + 1x1x1 merge."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medverse.model.attention import sincos_3d
from medverse.model.fusion import FusionBlock

CHANNELS, WIDTH, PATCHES = 4, 6, 2
SHAPE = (8, 8, 8)


def _block(layout: str = "strided", *, attention_first: bool = True) -> FusionBlock:
    return FusionBlock(CHANNELS, 2, WIDTH, PATCHES, layout, attention_first=attention_first)


def _position() -> torch.Tensor:
    return sincos_3d(PATCHES, WIDTH)


def _picking(block: FusionBlock, channel: int) -> FusionBlock:
    """Make every output channel of the merge copy concatenated channel ``channel``."""
    with torch.no_grad():
        block.final_conv.weight.zero_()
        block.final_conv.bias.zero_()
        block.final_conv.weight[:, channel] = 1.0
    return block


@pytest.mark.parametrize("layout", ["strided", "contiguous"])
def test_key_values_and_output_shapes(layout: str) -> None:
    block = _block(layout)
    target = torch.randn(2, CHANNELS, *SHAPE)
    keys, values = block.key_values(target, _position())
    assert keys.shape == (2, PATCHES**3, WIDTH)
    assert values.shape == (2, PATCHES**3, CHANNELS * 8**3 // PATCHES**3)
    out = block(torch.randn(2, CHANNELS, *SHAPE), (keys, values), _position())
    assert out.shape == (2, CHANNELS, *SHAPE)
    assert torch.isfinite(out).all()


def test_zero_merge_leaves_gelu_of_the_residual_unit() -> None:
    block = _block()
    with torch.no_grad():
        block.final_conv.weight.zero_()
        block.final_conv.bias.zero_()
    x = torch.randn(1, CHANNELS, *SHAPE)
    key_values = block.key_values(torch.randn(1, CHANNELS, *SHAPE), _position())
    torch.testing.assert_close(block(x, key_values, _position()), F.gelu(block.res(x)))


def test_constant_values_attend_to_that_constant() -> None:
    """Softmax weights sum to one: a constant key/value map is returned as is, whatever the
    queries, so picking the attention channel gives ``GELU(x' + constant)``."""
    block = _picking(_block(attention_first=True), 0)
    x = torch.randn(1, CHANNELS, *SHAPE)
    key_values = block.key_values(torch.full((1, CHANNELS, *SHAPE), 3.0), _position())
    expected = F.gelu(block.res(x) + 3.0)
    torch.testing.assert_close(block(x, key_values, _position()), expected)


@pytest.mark.parametrize("attention_first", [True, False])
def test_merge_order_follows_attention_first(attention_first: bool) -> None:
    x = torch.randn(1, CHANNELS, *SHAPE)
    constant = torch.full((1, CHANNELS, *SHAPE), 3.0)
    attention_channel = 0 if attention_first else CHANNELS
    feature_channel = CHANNELS if attention_first else 0

    block = _picking(_block(attention_first=attention_first), attention_channel)
    key_values = block.key_values(constant, _position())
    residual = block.res(x)
    torch.testing.assert_close(block(x, key_values, _position()), F.gelu(residual + 3.0))

    _picking(block, feature_channel)
    expected = F.gelu(residual + residual[:, :1])
    torch.testing.assert_close(block(x, key_values, _position()), expected)


def test_key_token_order_does_not_matter() -> None:
    """Attention over a set: permuting keys and values together leaves the output unchanged."""
    block = _block()
    x = torch.randn(1, CHANNELS, *SHAPE)
    keys, values = block.key_values(torch.randn(1, CHANNELS, *SHAPE), _position())
    order = torch.randperm(PATCHES**3)
    assert not torch.equal(order, torch.arange(PATCHES**3))
    out = block(x, (keys, values), _position())
    permuted = block(x, (keys[:, order], values[:, order]), _position())
    torch.testing.assert_close(permuted, out, rtol=1e-5, atol=1e-6)


def test_output_changes_with_the_key_values() -> None:
    block = _block()
    x = torch.randn(1, CHANNELS, *SHAPE)
    first = block(x, block.key_values(torch.randn(1, CHANNELS, *SHAPE), _position()), _position())
    second = block(x, block.key_values(torch.randn(1, CHANNELS, *SHAPE), _position()), _position())
    assert (first - second).abs().max() > 1e-4


def test_groups_share_one_key_value_item() -> None:
    """``num_groups=G``: items ``n*G .. n*G+G-1`` of ``x`` attend to key/value item ``n``; the
    same as repeating the key/values per item, and equivariant to the order inside a group."""
    block = _block()
    num_items, num_groups = 2, 3
    x = torch.randn(num_items * num_groups, CHANNELS, *SHAPE)
    keys, values = block.key_values(torch.randn(num_items, CHANNELS, *SHAPE), _position())

    grouped = block(x, (keys, values), _position(), num_groups=num_groups)
    assert grouped.shape == x.shape
    repeated = (keys.repeat_interleave(num_groups, 0), values.repeat_interleave(num_groups, 0))
    torch.testing.assert_close(grouped, block(x, repeated, _position()), rtol=1e-5, atol=1e-6)

    swap = torch.tensor([2, 0, 1, 4, 5, 3])  # reorder within each group only
    swapped = block(x[swap], (keys, values), _position(), num_groups=num_groups)
    torch.testing.assert_close(swapped, grouped[swap], rtol=1e-5, atol=1e-6)
