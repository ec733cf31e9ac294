"""Convolutional building blocks: residual units, down/up-sampling, 1x1x1 embeddings.

No normalisation layers anywhere; the activation is the exact (erf) GELU, as released.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GELU",
    "Downsample",
    "ResidualUnit",
    "UpsampleMerge",
    "channel_mix",
    "conv1x1",
    "gelu",
    "upsample2x",
]


#: Voxels of a map from which :func:`channel_mix` hands a CPU 1x1x1 convolution to oneDNN.
ONEDNN_POINTWISE_MIN_VOXELS = 32**3


def _onednn_pointwise(x: torch.Tensor) -> bool:
    """Whether oneDNN's 1x1x1 convolution beats the channel matmul on ``x`` (measured, 2
    threads: 8 -> 8 channels on a 64^3 map 0.45 ms against 3.6 ms; at 8^3 or with one input
    channel the matmul is as fast or faster, and only it keeps a one-channel map channels-last)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 5
        and x.shape[1] > 1
        and x.shape[2:].numel() >= ONEDNN_POINTWISE_MIN_VOXELS
        and x.is_contiguous(memory_format=torch.channels_last_3d)
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
    )


def channel_mix(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """A 1x1x1 convolution over the channels: ``(N, C, X, Y, Z) -> (N, C', X, Y, Z)``.

    One matmul over the channels, or on the CPU for large channels-last maps oneDNN's 1x1x1
    convolution (the same sums, up to float rounding; PyTorch's matmul handles the tall, thin
    ``(voxels, C) x (C, C')`` product poorly).

    Args:
        x: the feature map; channels-last in memory (``torch.channels_last_3d``, as every map
            the network makes) it is read without a copy.
        weight: ``(C', C)``.
        bias: ``(C',)`` or None.

    Returns:
        The result, channels-last in memory.
    """
    if _onednn_pointwise(x):
        kernel = weight.reshape(*weight.shape, 1, 1, 1).contiguous()
        return torch.mkldnn_convolution(x, kernel, bias, (0, 0, 0), (1, 1, 1), (1, 1, 1), 1)
    return F.linear(x.movedim(1, -1), weight, bias).movedim(-1, 1)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The exact (erf) GELU; a channels-last map goes through as the dense array it is.

    PyTorch's CPU kernel is slower on a channels-last ``(N, C, X, Y, Z)`` tensor than on the same
    memory viewed ``(N, X, Y, Z, C)``, which is contiguous (an 8-channel 64^3 map, 2 threads,
    alone: 1.1-2x the time in repeated measurements; the values differ by float rounding, so it
    seems to be another code path). Same layout out, same values up to float rounding.
    """
    if (
        x.dim() == 5
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last_3d)
    ):
        return F.gelu(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
    return F.gelu(x)


class GELU(nn.GELU):
    """``nn.GELU`` (exact) computed by :func:`gelu`; no parameters, so no state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x)


class Pointwise(nn.Conv3d):
    """A 1x1x1 convolution computed as a channel matmul (:func:`channel_mix`).

    Same parameters (and state-dict keys) as ``nn.Conv3d(kernel_size=1)``; on CPU PyTorch runs
    small-channel 1x1x1 Conv3d through a slow fallback, while the matmul takes the BLAS path.
    Its output is channels-last in memory, so from the input embeddings on every feature map
    of the network is, and oneDNN runs the 3x3x3 convolutions on such maps about twice as fast
    as on channels-first ones.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_mix(x, self.weight.flatten(1), self.bias)

    def split_weight(self, *in_channels: int) -> tuple[torch.Tensor, ...]:
        """``(C', C)`` weight cut into the column blocks of concatenated inputs of these widths.

        ``self(torch.cat(parts, dim=1))`` equals the sum of ``channel_mix(part, block)``
        (plus the bias once), without building the concatenation."""
        return self.weight.flatten(1).split(list(in_channels), dim=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv3d:
    """A 1x1x1 convolution (input embeddings, merges after concatenation, output head)."""
    return Pointwise(in_channels, out_channels)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that avoids PyTorch's slow CPU fallback for batch-1 mid-size inputs.

    For a batch of one, PyTorch picks its native (im2col) kernel whenever
    ``C * X * Y <= 20480``; for 16-32 voxel maps that is 3-4x slower than oneDNN, which is
    called directly there; on smaller channels-first maps (the bottom of the U-Nets) a stride-1
    convolution too (2 threads: 64 channels at 8^3 1.1 ms against 2.6 ms, 128 at 4^3 0.58
    against 0.78 ms; strided or channels-last ones there are as fast or faster as they are).
    Same parameters, same results up to float rounding.
    """

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            input.shape[0] == 1
            and input.device.type == "cpu"
            and input.dtype == torch.float32
            and (input.shape[2] >= 16 or (self.stride == (1, 1, 1) and input.is_contiguous()))
            and input.shape[1] * input.shape[2] * input.shape[3] <= 20480
            and torch.backends.mkldnn.is_available()
        ):
            return torch.mkldnn_convolution(
                input, weight, bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(input, weight, bias)


class ResidualUnit(nn.Module):
    """``GELU(x + conv(GELU(conv(x))))`` with ``num_convs`` 3x3x3 convolutions.

    ``layers`` alternates Conv3d and GELU so that state-dict keys are ``layers.0``,
    ``layers.2``, ... as in the released checkpoint.
    """

    def __init__(self, channels: int, num_convs: int = 2) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(num_convs):
            if i:
                mods.append(GELU())
            mods.append(Conv3d(channels, channels, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        out += x  # in place: the convolution's backward does not need its output
        return gelu(out)


class Downsample(Conv3d):
    """Halve every spatial axis: Conv3d kernel 4, stride 2, padding 1, no activation."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=4, stride=2, padding=1)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 up-sampling with ``align_corners=False`` (as inside the released U-Nets)."""
    return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


class UpsampleMerge(Pointwise):
    """Up-sample ``x`` (trilinear x2), concatenate the skip after it, merge with a 1x1x1 conv.

    Computed as ``upsample2x(W_x x) + W_skip skip + b``: the 1x1x1 convolution and the
    trilinear up-sampling commute (both linear, and the interpolation weights sum to one), so
    the coarse input is mixed down to the output width before it is up-sampled, and the
    concatenation is never built.

    Args:
        in_channels: channels of the coarse input ``x``.
        skip_channels: channels of the skip feature (the output width too).
    """

    def __init__(self, in_channels: int, skip_channels: int) -> None:
        super().__init__(in_channels + skip_channels, skip_channels)
        self.split = (in_channels, skip_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        weight_x, weight_skip = self.split_weight(*self.split)
        out = channel_mix(skip, weight_skip, self.bias)
        out += upsample2x(channel_mix(x, weight_x))
        return out
