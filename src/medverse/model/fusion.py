"""Fusion blocks: a residual unit, blockwise cross-attention, and a 1x1x1 merge.

* Encoder (context U-Net, target → context): queries from the context, keys/values from the
  target-encoder feature of the same stage; ``c = GELU(c' + conv1x1([c', attn]))``.
* Decoder (target decoder, context → target): queries from the target, keys/values from the
  averaged semantic context and, when present, the autoregressive (AR) context;
  ``t = GELU(t' + conv1x1([attn, t']))``.
"""

from __future__ import annotations

import torch
from torch import nn

from medverse.model.attention import BlockwiseCrossAttention
from medverse.model.blocks import ResidualUnit, channel_mix, conv1x1, gelu

__all__ = ["FusionBlock", "KeyValues"]

KeyValues = tuple[torch.Tensor, torch.Tensor]
"""``(keys (N, K, width), values (N, K, D))`` of one feature map, ready for attention."""


class FusionBlock(nn.Module):
    """ResidualUnit + BAM + 1x1x1 merge of the concatenation.

    Args:
        channels: feature channels.
        num_convs: convolutions of the residual unit.
        width: BAM query/key width.
        patches: BAM tokens per axis.
        layout: BAM token layout.
        attention_first: concatenation order of the merge: ``[attn, x']`` (decoder) when True,
            ``[x', attn]`` (encoder) when False.
    """

    def __init__(
        self,
        channels: int,
        num_convs: int,
        width: int,
        patches: int,
        layout: str,
        *,
        attention_first: bool,
    ) -> None:
        super().__init__()
        self.res = ResidualUnit(channels, num_convs)
        self.cross_attention = BlockwiseCrossAttention(channels, width, patches, layout)
        self.final_conv = conv1x1(2 * channels, channels)
        self.attention_first = attention_first

    def key_values(self, x: torch.Tensor, position: torch.Tensor) -> KeyValues:
        """Keys and values of a key/value feature map ``(N, C, X, Y, Z)``."""
        attn = self.cross_attention
        return attn.keys(x, position), attn.values(x)

    def forward(
        self,
        x: torch.Tensor,
        key_values: KeyValues,
        query_position: torch.Tensor,
        num_groups: int = 1,
    ) -> torch.Tensor:
        """Fuse ``x`` with a key/value set.

        Args:
            x: ``(N*G, C, X, Y, Z)``; the ``G = num_groups`` consecutive items share one item
                of ``key_values`` (e.g. several contexts against one target).
            key_values: keys ``(N, K, width)`` and values ``(N, K, C*X*Y*Z/p**3)``.
            query_position: ``(Q, width)`` position table plus the role code of ``x``.
            num_groups: ``G``.

        Returns:
            ``(N*G, C, X, Y, Z)``.
        """
        x = self.res(x)
        queries = self.cross_attention.queries(x, query_position)
        queries = queries.unflatten(0, (-1, num_groups))
        attn = self.cross_attention.attend(queries, *key_values, shape=x.shape)
        # final_conv of the concatenation [attn, x] (or [x, attn]) without building it
        channels = x.shape[1]
        weight_attn, weight_x = self.final_conv.split_weight(channels, channels)
        if not self.attention_first:
            weight_x, weight_attn = weight_attn, weight_x
        merged = channel_mix(attn, weight_attn, self.final_conv.bias)
        merged += channel_mix(x, weight_x)
        merged += x
        return gelu(merged)
