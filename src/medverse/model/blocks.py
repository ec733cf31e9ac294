"""Convolutional building blocks: residual units, down/up-sampling, 1x1x1 embeddings.

No normalisation layers anywhere; the activation is the exact (erf) GELU, as released.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualUnit", "Downsample", "UpsampleMerge", "conv1x1", "upsample2x"]


class Pointwise(nn.Conv3d):
    """A 1x1x1 convolution computed as a channel matmul.

    Same parameters (and state-dict keys) as ``nn.Conv3d(kernel_size=1)``; on CPU PyTorch runs
    small-channel 1x1x1 Conv3d through a slow fallback, while the matmul takes the BLAS path.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.flatten(1)
        out = torch.matmul(weight, x.flatten(2))
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.view(x.shape[0], -1, *x.shape[2:])


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv3d:
    """A 1x1x1 convolution (input embeddings, merges after concatenation, output head)."""
    return Pointwise(in_channels, out_channels)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that avoids PyTorch's slow CPU fallback for batch-1 mid-size inputs.

    For a batch of one, PyTorch picks its native (im2col) kernel whenever
    ``C * X * Y <= 20480``; for 16-32 voxel maps that is 3-4x slower than oneDNN, which is
    called directly there. Same parameters, same results up to float rounding.
    """

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            input.shape[0] == 1
            and input.device.type == "cpu"
            and input.dtype == torch.float32
            and input.shape[2] >= 16
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
                mods.append(nn.GELU())
            mods.append(Conv3d(channels, channels, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.layers(x))


class Downsample(Conv3d):
    """Halve every spatial axis: Conv3d kernel 4, stride 2, padding 1, no activation."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=4, stride=2, padding=1)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 up-sampling with ``align_corners=False`` (as inside the released U-Nets)."""
    return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


class UpsampleMerge(Pointwise):
    """Up-sample ``x`` (trilinear x2), concatenate the skip after it, merge with a 1x1x1 conv.

    Args:
        in_channels: channels of the coarse input ``x``.
        skip_channels: channels of the skip feature (the output width too).
    """

    def __init__(self, in_channels: int, skip_channels: int) -> None:
        super().__init__(in_channels + skip_channels, skip_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([upsample2x(x), skip], dim=1))
