"""Tests for medverse.model.blocks: 1x1x1 convolutions, residual units, down/up-sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medverse.model.blocks import (
    GELU,
    ONEDNN_POINTWISE_MIN_VOXELS,
    Conv3d,
    Downsample,
    Pointwise,
    ResidualUnit,
    UpsampleMerge,
    _onednn_pointwise,
    channel_mix,
    conv1x1,
    gelu,
    upsample2x,
)


def _zero_(module: nn.Module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()


# ------------------------------------------------------------------------------ Pointwise


def test_pointwise_matches_a_kernel_1_conv3d() -> None:
    conv = conv1x1(3, 4)
    x = torch.randn(2, 3, 8, 6, 4)
    out = conv(x)
    assert out.shape == (2, 4, 8, 6, 4)
    torch.testing.assert_close(out, F.conv3d(x, conv.weight, conv.bias), rtol=1e-5, atol=1e-6)


def test_pointwise_has_the_state_dict_of_a_kernel_1_conv3d() -> None:
    conv = conv1x1(2, 3)
    reference = nn.Conv3d(2, 3, kernel_size=1)
    assert isinstance(conv, Pointwise) and isinstance(conv, nn.Conv3d)
    assert {k: v.shape for k, v in conv.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    conv.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 2, 4, 4, 4)
    torch.testing.assert_close(conv(x), reference(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- Conv3d


@pytest.mark.parametrize(
    "shape",
    [
        (1, 2, 16, 16, 8),  # batch 1, >= 16 voxels along x: the direct oneDNN path (if available)
        (2, 2, 16, 16, 8),  # batch 2: PyTorch's own choice
        (1, 2, 8, 8, 8),  # under 16 voxels along x, channels-first, stride 1: oneDNN
        (1, 2, 8, 8, 8, "channels_last"),  # ... channels-last: PyTorch's own choice
        (1, 2, 8, 8, 8, "stride"),  # ... strided: PyTorch's own choice
    ],
)
def test_conv3d_matches_the_functional_conv(shape: tuple, monkeypatch) -> None:  # noqa: ANN001
    *shape, variant = shape if isinstance(shape[-1], str) else (*shape, "")
    stride = 2 if variant == "stride" else 1
    conv = Conv3d(2, 3, kernel_size=3, padding=1, stride=stride)
    x = torch.randn(shape)
    if variant == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    calls = []
    direct = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *a: calls.append(1) or direct(*a))
    out = conv(x)
    expect_direct = shape[0] == 1 and (shape[2] >= 16 or not variant)
    assert calls == ([1] if expect_direct and torch.backends.mkldnn.is_available() else [])
    assert out.shape == (shape[0], 3, *(n // stride for n in shape[2:]))
    torch.testing.assert_close(
        out, F.conv3d(x, conv.weight, conv.bias, padding=1, stride=stride), rtol=1e-4, atol=1e-5
    )


# -------------------------------------------------------------------------- ResidualUnit


@pytest.mark.parametrize("num_convs", [1, 2, 3])
def test_residual_unit_layers_alternate_conv_and_gelu(num_convs: int) -> None:
    unit = ResidualUnit(3, num_convs)
    kinds = [type(m) for m in unit.layers]
    assert kinds == [Conv3d if i % 2 == 0 else GELU for i in range(2 * num_convs - 1)]
    weight_keys = sorted(k for k in unit.state_dict() if k.endswith(".weight"))
    assert weight_keys == [f"layers.{2 * i}.weight" for i in range(num_convs)]


def test_residual_unit_with_zero_weights_is_gelu_of_the_input() -> None:
    unit = ResidualUnit(2, num_convs=2)
    _zero_(unit)
    x = torch.randn(1, 2, 8, 8, 8)
    out = unit(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, F.gelu(x), rtol=0, atol=0)


def test_residual_unit_adds_the_convolution_branch() -> None:
    unit = ResidualUnit(2, num_convs=2)
    x = torch.randn(1, 2, 8, 8, 8)
    branch = unit.layers(x)
    assert branch.abs().max() > 0
    torch.testing.assert_close(unit(x), F.gelu(x + branch))
    # the activation is the exact (erf) GELU, not the tanh approximation
    assert not torch.allclose(unit(x), F.gelu(x + branch, approximate="tanh"), atol=1e-6)


def test_residual_unit_has_no_normalisation() -> None:
    unit = ResidualUnit(4)
    norms = (nn.BatchNorm3d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in unit.modules())


# ---------------------------------------------------------------------------- Downsample


def test_downsample_halves_every_axis() -> None:
    down = Downsample(2, 4)
    assert down(torch.randn(2, 2, 8, 12, 16)).shape == (2, 4, 4, 6, 8)


def test_downsample_of_ones_counts_the_kernel_voxels_inside() -> None:
    """Kernel 4, stride 2, padding 1: a corner output sees 3^3 input voxels, an inner one 4^3."""
    down = Downsample(1, 1)
    with torch.no_grad():
        down.weight.fill_(1.0)
        down.bias.zero_()
    out = down(torch.ones(1, 1, 8, 8, 8))[0, 0]
    assert out[0, 0, 0].item() == 27.0
    assert out[0, 1, 1].item() == 3 * 16.0
    assert out[1, 1, 1].item() == 64.0
    assert out[3, 3, 3].item() == 27.0


# ------------------------------------------------------------------------------ upsample


def test_upsample2x_is_trilinear_without_aligned_corners() -> None:
    x = torch.zeros(1, 1, 2, 2, 2)
    x[:, :, 1] = 1.0  # a step along the first axis
    out = upsample2x(x)
    assert out.shape == (1, 1, 4, 4, 4)
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0])
    torch.testing.assert_close(out[0, 0, :, 2, 1], expected)
    # constant along the other axes
    assert torch.equal(out, out[:, :, :, :1, :1].expand_as(out))


def test_upsample2x_keeps_constants() -> None:
    x = torch.full((2, 3, 4, 4, 4), 1.5)
    torch.testing.assert_close(upsample2x(x), torch.full((2, 3, 8, 8, 8), 1.5))


# ------------------------------------------------------------------------- UpsampleMerge


def _merge_picking(channel: int, in_channels: int = 3, skip_channels: int = 2) -> UpsampleMerge:
    """An UpsampleMerge whose every output channel copies concatenated channel ``channel``."""
    merge = UpsampleMerge(in_channels, skip_channels)
    with torch.no_grad():
        merge.weight.zero_()
        merge.bias.zero_()
        merge.weight[:, channel] = 1.0
    return merge


def test_upsample_merge_shape_and_parameters() -> None:
    merge = UpsampleMerge(4, 2)
    assert merge.weight.shape == (2, 6, 1, 1, 1)
    out = merge(torch.randn(2, 4, 4, 4, 4), torch.randn(2, 2, 8, 8, 8))
    assert out.shape == (2, 2, 8, 8, 8)


def test_upsample_merge_puts_the_upsampled_input_first_and_the_skip_after() -> None:
    x, skip = torch.randn(1, 3, 4, 4, 4), torch.randn(1, 2, 8, 8, 8)
    up = upsample2x(x)
    torch.testing.assert_close(_merge_picking(1)(x, skip)[:, 0], up[:, 1])
    torch.testing.assert_close(_merge_picking(3)(x, skip)[:, 0], skip[:, 0])
    torch.testing.assert_close(_merge_picking(4)(x, skip)[:, 1], skip[:, 1])


def _channels_last(*shape: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(sum(shape))
    return torch.randn(*shape, generator=generator).contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("shape", [(2, 8, 32, 32, 32), (1, 1, 40, 36, 32), (2, 16, 8, 8, 8)])
def test_channel_mix_is_the_1x1x1_convolution_on_every_path(shape) -> None:  # noqa: ANN001
    x = _channels_last(*shape)
    weight = torch.randn(5, shape[1], generator=torch.Generator().manual_seed(1))
    bias = torch.randn(5, generator=torch.Generator().manual_seed(2))
    expected = F.conv3d(x.contiguous(), weight[:, :, None, None, None], bias)
    out = channel_mix(x, weight, bias)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    large = shape[2] * shape[3] * shape[4] >= ONEDNN_POINTWISE_MIN_VOXELS and shape[1] > 1
    assert _onednn_pointwise(x) is (large and torch.backends.mkldnn.is_available())
    # a column block of a wider weight (the split merges) gives the same
    wide = torch.cat([weight, torch.randn(5, 3)], dim=1)
    block = wide.split([shape[1], 3], dim=1)[0]
    torch.testing.assert_close(channel_mix(x, block, bias), expected, rtol=0, atol=1e-5)


def test_channel_mix_keeps_the_matmul_under_autocast_and_for_channels_first_maps() -> None:
    x = _channels_last(1, 8, 32, 32, 32)
    assert _onednn_pointwise(x) is torch.backends.mkldnn.is_available()
    assert not _onednn_pointwise(x.contiguous())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _onednn_pointwise(x)


@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "strided"])
def test_gelu_is_the_exact_gelu_in_the_same_layout(layout: str) -> None:
    x = _channels_last(2, 8, 12, 10, 6) * 4
    if layout == "contiguous":
        x = x.contiguous()
    elif layout == "strided":
        x = x[:, :, ::2]
    out = gelu(x)
    torch.testing.assert_close(out, F.gelu(x), rtol=0, atol=1e-6)
    assert out.stride() == F.gelu(x).stride() or layout == "strided"
    assert isinstance(GELU(), nn.GELU) and GELU().approximate == "none"
    torch.testing.assert_close(GELU()(x), out, rtol=0, atol=0)
