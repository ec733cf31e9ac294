"""Convolutional building blocks: residual units, down/up-sampling, 1x1x1 embeddings.

No normalisation layers anywhere; the activation is the exact (erf) GELU, as released.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualUnit", "Downsample", "UpsampleMerge", "conv1x1", "upsample2x"]


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv3d:
    """A 1x1x1 convolution (input embeddings, merges after concatenation, output head)."""
    return nn.Conv3d(in_channels, out_channels, kernel_size=1)


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
            mods.append(nn.Conv3d(channels, channels, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.layers(x))


class Downsample(nn.Conv3d):
    """Halve every spatial axis: Conv3d kernel 4, stride 2, padding 1, no activation."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=4, stride=2, padding=1)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 up-sampling with ``align_corners=False`` (as inside the released U-Nets)."""
    return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


class UpsampleMerge(nn.Conv3d):
    """Up-sample ``x`` (trilinear x2), concatenate the skip after it, merge with a 1x1x1 conv.

    Args:
        in_channels: channels of the coarse input ``x``.
        skip_channels: channels of the skip feature (the output width too).
    """

    def __init__(self, in_channels: int, skip_channels: int) -> None:
        super().__init__(in_channels + skip_channels, skip_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([upsample2x(x), skip], dim=1))
