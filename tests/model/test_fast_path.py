"""The network's fast CPU path equals the straightforward computation of the same layers.

The model runs on channels-last feature maps, computes 1x1x1 convolutions as matmuls, never
builds the concatenations that its 1x1x1 merges read, mixes an up-sampling merge's coarse input
down before up-sampling it, averages tokens without copying them and sums a mini-batch's
contexts one at a time. Each reference below is the plain computation (channels-first maps,
``F.conv3d``, ``torch.cat``, tokens copied channel-major), as the released code does it; the
fast path must match it to float rounding (1e-5), block by block and for the whole bundled
``medverse-small`` on a random window.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import medverse.model.attention as attention
import medverse.model.network as network
from medverse.checkpoint.factory import load_model
from medverse.model.blocks import Pointwise, ResidualUnit, UpsampleMerge, upsample2x
from medverse.model.fusion import FusionBlock

TOL = 1e-5

# ------------------------------------------------------------- the straightforward layers

_REF_PATTERNS = {
    "strided": "n c (i a) (j b) (k d) -> n (a b d) (c i j k)",
    "contiguous": "n c (a i) (b j) (d k) -> n (a b d) (c i j k)",
}


def _ref_to_tokens(x: torch.Tensor, patches: int, layout: str) -> torch.Tensor:
    return rearrange(x, _REF_PATTERNS[layout], a=patches, b=patches, d=patches)


def _ref_from_tokens(tokens: torch.Tensor, shape, patches: int, layout: str) -> torch.Tensor:  # noqa: ANN001
    src, dst = _REF_PATTERNS[layout].split(" -> ")
    p = patches
    return rearrange(
        tokens, f"{dst} -> {src}", a=p, b=p, d=p, c=shape[1], i=shape[2] // p, j=shape[3] // p
    )


def _ref_token_means(x: torch.Tensor, patches: int, layout: str) -> torch.Tensor:
    src = _REF_PATTERNS[layout].split(" -> ")[0]
    tokens = rearrange(x, f"{src} -> n (a b d) c (i j k)", a=patches, b=patches, d=patches)
    return tokens.mean(dim=-1)


def _ref_pointwise(self: Pointwise, x: torch.Tensor) -> torch.Tensor:
    return F.conv3d(x.contiguous(), self.weight, self.bias)


def _ref_upsample_merge(self: UpsampleMerge, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    merged = torch.cat([upsample2x(x.contiguous()), skip.contiguous()], dim=1)
    return F.conv3d(merged, self.weight, self.bias)


def _ref_residual_unit(self: ResidualUnit, x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    branch = x
    for layer in self.layers:
        if isinstance(layer, torch.nn.Conv3d):
            branch = F.conv3d(branch, layer.weight, layer.bias, padding=layer.padding)
        else:
            branch = layer(branch)
    return F.gelu(x + branch)


def _ref_fusion(self: FusionBlock, x, key_values, query_position, num_groups=1):  # noqa: ANN001, ANN202
    x = self.res(x)
    queries = self.cross_attention.queries(x, query_position).unflatten(0, (-1, num_groups))
    attn = self.cross_attention.attend(queries, *key_values, shape=x.shape)
    merged = torch.cat([attn, x] if self.attention_first else [x, attn], dim=1)
    return F.gelu(x + F.conv3d(merged, self.final_conv.weight, self.final_conv.bias))


def _ref_sum_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    return x.unflatten(0, (-1, group)).sum(dim=1)


def _use_straightforward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every layer compute the straightforward way until the test ends."""
    monkeypatch.setattr(network, "_sum_groups", _ref_sum_groups)
    monkeypatch.setattr(attention, "to_tokens", _ref_to_tokens)
    monkeypatch.setattr(attention, "from_tokens", _ref_from_tokens)
    monkeypatch.setattr(attention, "token_means", _ref_token_means)
    monkeypatch.setattr(Pointwise, "forward", _ref_pointwise)
    monkeypatch.setattr(UpsampleMerge, "forward", _ref_upsample_merge)
    monkeypatch.setattr(ResidualUnit, "forward", _ref_residual_unit)
    monkeypatch.setattr(FusionBlock, "forward", _ref_fusion)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("layout", ["strided", "contiguous"])
def test_tokens_hold_the_same_voxels_in_another_order(layout: str) -> None:
    x = torch.randn(2, 3, 8, 12, 16).contiguous(memory_format=torch.channels_last_3d)
    fast, ref = attention.to_tokens(x, 4, layout), _ref_to_tokens(x, 4, layout)
    assert torch.equal(fast.sort(dim=-1).values, ref.sort(dim=-1).values)
    torch.testing.assert_close(
        attention.token_means(x, 4, layout), _ref_token_means(x, 4, layout), rtol=0, atol=TOL
    )
    back = attention.from_tokens(fast, x.shape, 4, layout)
    assert torch.equal(back, x) and back.is_contiguous(memory_format=torch.channels_last_3d)


def test_pointwise_and_residual_unit_match_the_plain_convolutions() -> None:
    torch.manual_seed(0)
    conv, unit = Pointwise(3, 5), ResidualUnit(5)
    x = torch.randn(2, 3, 16, 8, 12)
    y = conv(x)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert _max_diff(y, _ref_pointwise(conv, x)) <= TOL
    assert _max_diff(unit(y), _ref_residual_unit(unit, y)) <= TOL


def test_upsample_merge_matches_the_merge_of_the_concatenation() -> None:
    torch.manual_seed(0)
    merge = UpsampleMerge(6, 3)
    x, skip = torch.randn(2, 6, 4, 6, 8), torch.randn(2, 3, 8, 12, 16)
    assert _max_diff(merge(x, skip), _ref_upsample_merge(merge, x, skip)) <= TOL


@pytest.mark.parametrize("attention_first", [True, False])
@pytest.mark.parametrize("layout", ["strided", "contiguous"])
def test_fusion_matches_the_merge_of_the_concatenation(attention_first: bool, layout: str) -> None:
    torch.manual_seed(0)
    block = FusionBlock(4, 2, 6, 2, layout, attention_first=attention_first)
    x, kv_map = torch.randn(4, 4, 8, 8, 8), torch.randn(2, 4, 8, 8, 8)
    position = attention.sincos_3d(2, 6)
    fast = block(x, block.key_values(kv_map, position), position, num_groups=2)
    ref = _ref_fusion(block, x, block.key_values(kv_map, position), position, num_groups=2)
    assert _max_diff(fast, ref) <= TOL


# ------------------------------------------------------------------------------ network


@pytest.mark.slow  # the bundled network twice, fast and plain, ~7 s or more on 2 cores
def test_bundled_network_matches_the_straightforward_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """medverse-small on a random 64^3 window with two contexts and the AR pair."""
    net = load_model("medverse-small")
    gen = torch.Generator().manual_seed(0)
    shape = (1, 1, 64, 64, 64)
    target = torch.rand(shape, generator=gen)
    context_in = torch.rand(1, 2, *shape[1:], generator=gen)
    context_out = (torch.rand(1, 2, *shape[1:], generator=gen) > 0.5).float()
    ar_in, ar_out = torch.rand(1, 1, *shape[1:], generator=gen), torch.rand(1, 1, *shape[1:])
    with torch.inference_mode():
        fast = net(target, context_in, context_out, ar_in, ar_out, context_batch=1)
        _use_straightforward(monkeypatch)
        ref = net(target, context_in, context_out, ar_in, ar_out, context_batch=1)
    assert fast.std() > 0.01  # the output is not a constant that hides the difference
    assert _max_diff(fast, ref) <= TOL
