"""The Medverse network: target encoder, context U-Net, target decoder.

Hu et al., "Medverse: A Universal Model for Full-Resolution 3D Medical Image Segmentation,
Transformation and Enhancement", arXiv 2509.09232 (AAAI 2026). The attribute names follow the
released code so that :mod:`medverse.checkpoint.convert` needs only a short rename table.

Shapes: ``B`` batch (windows), ``L`` contexts, ``C`` channels, ``X Y Z`` spatial.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from medverse.model.attention import sincos_3d
from medverse.model.blocks import GELU, Conv3d, Downsample, ResidualUnit, UpsampleMerge, conv1x1
from medverse.model.config import ModelConfig
from medverse.model.fusion import FusionBlock, KeyValues

__all__ = ["MedverseNet", "TargetState", "TargetEncoder", "ContextUNet", "TargetDecoder"]


class ResidualStage(nn.Module):
    """A stage that is only a residual unit (kept as a module so keys read ``<stage>.res.*``)."""

    def __init__(self, channels: int, num_convs: int) -> None:
        super().__init__()
        self.res = ResidualUnit(channels, num_convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(x)


def _sum_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """``(B*G, ...) -> (B, ...)``: the sum of each run of ``G`` consecutive items.

    Added one item at a time: on the CPU several times faster than ``sum(dim=1)`` over the
    unflattened groups."""
    return functools.reduce(torch.add, x.unflatten(0, (-1, group)).unbind(1))


#: A context-U-Net stage whose maps have every axis at least this long runs one context at a
#: time in :meth:`ContextUNet.group_sums`: batch or not, its 3x3x3 convolutions then run
#: oneDNN's direct kernel (see :class:`~medverse.model.blocks.Conv3d`), which gave the batch's
#: bits (measured: AVX2 CPU, torch 2.13). Below it PyTorch runs a single small map through its
#: own kernel, whose rounding differs (up to ~2e-6 per convolution), so those stages stay
#: batched.
ITEMWISE_MIN_EDGE = 16


def _zero_conv1x1(channels: int) -> nn.Conv3d:
    conv = conv1x1(channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class GuidedRefiner(nn.Module):
    """The guided call's refinement head (``ModelConfig.guided_refiner``): two 3x3x3
    convolutions with GELU over ``(features, prior, image)``, then a zero-initialised 1x1x1
    convolution to one channel, a correction added to the gated output."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            Conv3d(channels + 2, width, kernel_size=3, padding=1),
            GELU(),
            Conv3d(width, width, kernel_size=3, padding=1),
            GELU(),
        )
        self.out = conv1x1(width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, f: torch.Tensor, prior: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.out(self.layers(torch.cat([f, prior, image], dim=1)))


class OutputBlock(nn.Module):
    """ResidualUnit(C0) then a 1x1x1 conv to one channel; no final activation.

    With ``input_skip`` (not in the released model) a second, zero-initialised 1x1x1 conv of the
    same features blends the target image into the output, per voxel:
    ``h + gate(f) * (x - h)`` with ``h = head(f)`` (gate 0: the head alone, 1: the input).

    With ``prior_gate`` (not in the released model) and a ``prior`` given, the output starts
    from the prior and moves towards the head where a zero-initialised gate says so:
    ``prior + prior_gate(f) * (out - prior)``; a ``guided_refiner`` width adds
    :class:`GuidedRefiner`'s correction to that (guided calls only).
    """

    def __init__(
        self,
        channels: int,
        num_convs: int,
        *,
        input_skip: bool = False,
        prior_gate: bool = False,
        guided_refiner: int = 0,
    ) -> None:
        super().__init__()
        self.res = ResidualUnit(channels, num_convs)
        self.head = conv1x1(channels, 1)
        self.gate = _zero_conv1x1(channels) if input_skip else None
        self.prior_gate = _zero_conv1x1(channels) if prior_gate else None
        self.refiner = GuidedRefiner(channels, guided_refiner) if guided_refiner else None

    def forward(
        self,
        x: torch.Tensor,
        image: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        f = self.res(x)
        out = self.head(f)
        if self.gate is not None:
            if image is None:
                raise ValueError("this network has an input skip: pass the target image")
            out = out + self.gate(f) * (image - out)
        if prior is not None:
            if self.prior_gate is None:
                raise ValueError("this network has no prior gate: call it without a prior")
            out = prior + self.prior_gate(f) * (out - prior)
            if self.refiner is not None:
                if image is None:
                    raise ValueError("this network has a guided refiner: pass the target image")
                out = out + self.refiner(f, prior, image)
        return out


def _fusion(cfg: ModelConfig, channels: int, *, attention_first: bool) -> FusionBlock:
    return FusionBlock(
        channels,
        cfg.convs_per_stage,
        cfg.bam_width,
        cfg.bam_patches,
        cfg.token_layout,
        attention_first=attention_first,
    )


class TargetEncoder(nn.Module):
    """1→C0 embedding, then per stage a residual unit and a down-sampling. Never sees contexts."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.embedding = conv1x1(1, ch[0])
        self.enc_blocks = nn.ModuleList(ResidualStage(c, cfg.convs_per_stage) for c in ch[:-1])
        self.downsample_blocks = nn.ModuleList(Downsample(a, b) for a, b in zip(ch[:-1], ch[1:]))

    def forward(self, target: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 1, X, Y, Z)`` → pre-down-sampling features, finest first, then the bottleneck."""
        x = self.embedding(target)
        features = []
        for block, down in zip(self.enc_blocks, self.downsample_blocks):
            x = block(x)
            features.append(x)
            x = down(x)
        features.append(x)
        return features


class ContextUNet(nn.Module):
    """U-Net over (image, output) pairs, fused with the target at each encoder stage.

    Shared by the semantic contexts and the autoregressive (AR) context.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.embedding = conv1x1(2, ch[0])
        self.enc_blocks = nn.ModuleList(
            [_fusion(cfg, c, attention_first=False) for c in ch[:-1]]
            + [ResidualStage(ch[-1], cfg.convs_per_stage)]
        )
        self.downsample_blocks = nn.ModuleList(Downsample(a, b) for a, b in zip(ch[:-1], ch[1:]))
        rev = ch[::-1]
        self.upsample_blocks = nn.ModuleList(UpsampleMerge(a, b) for a, b in zip(rev[:-1], rev[1:]))
        self.dec_blocks = nn.ModuleList(ResidualStage(c, cfg.convs_per_stage) for c in rev[1:])

    def forward(
        self,
        pairs: torch.Tensor,
        target_key_values: list[KeyValues],
        query_position: torch.Tensor,
        num_groups: int,
        embedding: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Features of each context, coarsest (bottleneck) first.

        Args:
            pairs: ``(B*G, 2, X, Y, Z)`` image and output, ``G`` contexts per target.
            target_key_values: per encoder stage, keys/values of the target ``(B, ...)``.
            query_position: ``(p**3, width)`` table plus the role code of these contexts.
            num_groups: ``G``.
            embedding: ``(C0,)`` added after stage 0's fusion (the AR context), or None.

        Returns:
            ``stages`` maps ``(B*G, C_s, ...)`` from the bottleneck to full resolution.
        """
        x = self.embedding(pairs)
        skips = []
        for i, down in enumerate(self.downsample_blocks):
            x = self._encoder_stage(i, x, target_key_values, query_position, num_groups, embedding)
            skips.append(x)
            x = down(x)
        x = self.enc_blocks[-1](x)
        features = [x]
        for up, block, skip in zip(self.upsample_blocks, self.dec_blocks, reversed(skips)):
            x = block(up(x, skip))
            features.append(x)
        return features

    def _encoder_stage(
        self,
        i: int,
        x: torch.Tensor,
        target_key_values: list[KeyValues],
        query_position: torch.Tensor,
        num_groups: int,
        embedding: torch.Tensor | None,
    ) -> torch.Tensor:
        """Encoder stage ``i`` (fusion with the target), plus ``embedding`` after stage 0."""
        x = self.enc_blocks[i](x, target_key_values[i], query_position, num_groups)
        if i == 0 and embedding is not None:
            x = x + embedding.view(1, -1, 1, 1, 1)
        return x

    def group_sums(
        self,
        pairs: torch.Tensor,
        target_key_values: list[KeyValues],
        query_position: torch.Tensor,
        num_groups: int,
        embedding: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """:meth:`forward`'s features summed over each run of ``G`` consecutive items.

        Per level, bottleneck first, ``(B, C_s, ...)``: the numbers of
        ``[_sum_groups(f, G) for f in self(pairs, ...)]`` (bit for bit where measured, see
        :data:`ITEMWISE_MIN_EDGE`). On the CPU without gradients, for
        the contexts of one target (``B == 1``, ``G > 1``), the stages whose maps have every
        axis at least :data:`ITEMWISE_MIN_EDGE` long run one context at a time and only the
        small coarse stages run as one batch, so the working memory of the large stages is
        that of one context whatever ``G`` (each context's features are added to the sums as
        they come out; only the skips of the large stages are held for every context, as in
        a batch).
        """
        items = pairs.shape[0]
        if (
            pairs.device.type != "cpu"
            or torch.is_grad_enabled()
            or items != num_groups
            or items == 1
        ):
            feats = self(pairs, target_key_values, query_position, num_groups, embedding)
            return [_sum_groups(f, num_groups) for f in feats]
        stages = len(self.downsample_blocks)

        def large(x: torch.Tensor) -> bool:
            return min(x.shape[-3:]) >= ITEMWISE_MIN_EDGE

        # encoder: every context alone through the large stages
        item_skips: list[list[torch.Tensor]] = []
        small: list[torch.Tensor] = []
        itemwise = 0  # stages run one context at a time
        for j in range(items):
            x = self.embedding(pairs[j : j + 1])
            skips = []
            for i in range(stages):
                if not large(x):
                    break
                x = self._encoder_stage(i, x, target_key_values, query_position, 1, embedding)
                skips.append(x)
                x = self.downsample_blocks[i](x)
            itemwise = len(skips)
            item_skips.append(skips)
            small.append(x)
            del x, skips
        # the small stages as one batch
        x = torch.cat(small)
        del small
        skips = []
        for i in range(itemwise, stages):
            x = self._encoder_stage(i, x, target_key_values, query_position, num_groups, embedding)
            skips.append(x)
            x = self.downsample_blocks[i](x)
        x = self.enc_blocks[-1](x)
        sums = [_sum_groups(x, num_groups)]
        decoder = list(zip(self.upsample_blocks, self.dec_blocks))
        batched = stages - itemwise  # decoder stages on the batch (their skips are small)
        for (up, block), skip in zip(decoder[:batched], reversed(skips)):
            x = block(up(x, skip))
            sums.append(_sum_groups(x, num_groups))
        del skips
        # decoder: every context alone through the large stages, summed as it comes out
        coarse = x
        for j in range(items):
            x = coarse[j : j + 1]
            skips = item_skips[j]
            item_skips[j] = []
            for level, ((up, block), skip) in enumerate(zip(decoder[batched:], reversed(skips))):
                x = block(up(x, skip))
                if j == 0:
                    sums.append(x)
                else:
                    sums[1 + batched + level].add_(x)
            del skips, x
        return sums


class TargetDecoder(nn.Module):
    """Bottleneck fusion, then per stage up-sample + skip, residual unit and context fusion."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        rev = cfg.channels[::-1]
        self.enc_blocks = nn.ModuleList([_fusion(cfg, rev[0], attention_first=True)])
        self.upsample_blocks = nn.ModuleList(UpsampleMerge(a, b) for a, b in zip(rev[:-1], rev[1:]))
        self.dec_blocks = nn.ModuleList(_fusion(cfg, c, attention_first=True) for c in rev[1:])
        self.output_block = OutputBlock(
            rev[-1],
            cfg.convs_per_stage,
            input_skip=cfg.input_skip,
            prior_gate=cfg.prior_gate,
            guided_refiner=cfg.guided_refiner,
        )

    @property
    def fusion_blocks(self) -> list[FusionBlock]:
        """Fusion blocks from the bottleneck to full resolution (one per context level)."""
        return [self.enc_blocks[0], *self.dec_blocks]

    def forward(
        self,
        target_features: list[torch.Tensor],
        context_key_values: list[KeyValues],
        query_position: torch.Tensor,
        image: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``target_features`` from the encoder, per-level context keys/values → ``(B, 1, ...)``.

        ``image`` (the target window) is needed only by a network with an input skip; ``prior``
        ``(B, 1, ...)`` only in a registration-guided call of a network with a prior gate.
        """
        t = self.enc_blocks[0](target_features[-1], context_key_values[0], query_position)
        skips = target_features[-2::-1]
        for i, (up, block) in enumerate(zip(self.upsample_blocks, self.dec_blocks)):
            t = block(up(t, skips[i]), context_key_values[i + 1], query_position)
        return self.output_block(t, image, prior)


@dataclass
class TargetState:
    """What the target contributes, computed once and reused for every context set and class.

    Attributes:
        features: target-encoder features, finest first, then the bottleneck.
        key_values: keys/values of the target for each context-U-Net encoder fusion.
        image: the target window itself (read by the input skip, when the network has one).
    """

    features: list[torch.Tensor]
    key_values: list[KeyValues]
    image: torch.Tensor


class MedverseNet(nn.Module):
    """The Medverse in-context network on one window.

    Args:
        config: architecture; the window size is not baked in (any multiple of
            ``config.window_multiple`` works).

    Example:
        >>> cfg = ModelConfig(channels=(4, 8, 16), window=32)
        >>> net = MedverseNet(cfg).eval()
        >>> t = torch.rand(1, 1, 32, 32, 32)
        >>> ci, co = torch.rand(1, 2, 1, 32, 32, 32), torch.rand(1, 2, 1, 32, 32, 32)
        >>> net(t, ci, co).shape
        torch.Size([1, 1, 32, 32, 32])
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        table = sincos_3d(cfg.bam_patches, cfg.bam_width)[None]
        self.sincos_pos_embed = nn.Parameter(table, requires_grad=False)
        self.target_code = nn.Parameter(torch.zeros(cfg.bam_width))
        self.image_context_code = nn.Parameter(torch.zeros(cfg.bam_width))
        self.image_context_embedding = nn.Parameter(torch.zeros(cfg.channels[0]))
        self.context_unet = ContextUNet(cfg)
        self.target_encoder = TargetEncoder(cfg)
        self.target_decoder = TargetDecoder(cfg)
        self._init_codes()

    def _init_codes(self) -> None:
        for p in (self.target_code, self.image_context_code, self.image_context_embedding):
            nn.init.normal_(p, std=0.02)

    # -- roles ------------------------------------------------------------------------------
    def _position(self, role: str) -> torch.Tensor:
        table = self.sincos_pos_embed[0]
        if role == "target":
            return table + self.target_code
        if role == "ar":
            return table + self.image_context_code
        return table

    # -- stages -----------------------------------------------------------------------------
    def encode_target(self, target: torch.Tensor) -> TargetState:
        """Run the target encoder once: ``(B, 1, X, Y, Z)`` → :class:`TargetState`."""
        features = self.target_encoder(target)
        position = self._position("target")
        blocks = self.context_unet.enc_blocks[:-1]
        key_values = [blk.key_values(f, position) for blk, f in zip(blocks, features)]
        return TargetState(features, key_values, target)

    def encode_contexts(
        self,
        state: TargetState,
        context_in: torch.Tensor,
        context_out: torch.Tensor,
        *,
        context_batch: int | None = None,
        autoregressive: bool = False,
    ) -> list[torch.Tensor]:
        """Mean context-U-Net features over contexts, in mini-batches of ``context_batch``.

        Memory is that of one mini-batch (plus the running sums), whatever the number of
        contexts; on the CPU without gradients, that of one context: a mini-batch's large
        stages run one context at a time (:meth:`ContextUNet.group_sums`, the same sums) and
        the sums are added to in place. In training mode with gradients on, all mini-batches but the last run without
        gradient and the last one's gradient is scaled by the number of mini-batches.

        Args:
            state: from :meth:`encode_target`.
            context_in: ``(B, L, 1, X, Y, Z)`` context images.
            context_out: ``(B, L, 1, X, Y, Z)`` context outputs.
            context_batch: contexts per mini-batch (the released ``l``); None = all at once.
            autoregressive: these are the AR pair (role code + embedding), not semantic.

        Returns:
            Per level, bottleneck first: the mean feature map ``(B, C_s, ...)``.
        """
        num_contexts = context_in.shape[1]
        step = num_contexts if not context_batch else min(context_batch, num_contexts)
        starts = list(range(0, num_contexts, step))
        role = "ar" if autoregressive else "semantic"
        position = self._position(role)
        embedding = self.image_context_embedding if autoregressive else None
        track_grad = torch.is_grad_enabled() and self.training
        sums: list[torch.Tensor] | None = None
        for n, start in enumerate(starts):
            last = n == len(starts) - 1
            pairs = torch.cat(
                [context_in[:, start : start + step], context_out[:, start : start + step]], dim=2
            )
            group = pairs.shape[1]
            with torch.set_grad_enabled(track_grad and last):
                chunk = self.context_unet.group_sums(
                    pairs.flatten(0, 1), state.key_values, position, group, embedding
                )
                del pairs  # streamed: nothing of a mini-batch outlives it but its sums
            if track_grad and last and len(starts) > 1:
                k = len(starts)
                chunk = [k * c - (k - 1) * c.detach() for c in chunk]
            if sums is None:
                sums = chunk
            elif torch.is_grad_enabled():
                sums = [s + c for s, c in zip(sums, chunk)]
            else:  # in place: the same sums, no second copy of them
                for s, c in zip(sums, chunk):
                    s.add_(c)
            del chunk
        assert sums is not None
        return [s / num_contexts for s in sums]

    def decode(
        self,
        state: TargetState,
        semantic: list[torch.Tensor],
        autoregressive: list[torch.Tensor] | None = None,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Target decoder attending to the semantic mean (and the AR features) → ``(B, 1, ...)``.

        ``prior`` ``(B, 1, ...)``: a registration-guided call's fused context masks, which the
        prior gate starts from (see :class:`~medverse.model.config.ModelConfig`).
        """
        blocks = self.target_decoder.fusion_blocks
        sem_pos, ar_pos = self._position("semantic"), self._position("ar")
        key_values = []
        for i, blk in enumerate(blocks):
            keys, values = blk.key_values(semantic[i], sem_pos)
            if autoregressive is not None:
                ar_keys, ar_values = blk.key_values(autoregressive[i], ar_pos)
                keys = torch.cat([keys, ar_keys], dim=1)
                values = torch.cat([values, ar_values], dim=1)
            key_values.append((keys, values))
        return self.target_decoder(
            state.features, key_values, self._position("target"), state.image, prior
        )

    def forward(
        self,
        target: torch.Tensor,
        context_in: torch.Tensor,
        context_out: torch.Tensor,
        ar_in: torch.Tensor | None = None,
        ar_out: torch.Tensor | None = None,
        *,
        context_batch: int | None = None,
        guided: bool = False,
    ) -> torch.Tensor:
        """One window.

        Args:
            target: ``(B, 1, X, Y, Z)`` in [0, 1].
            context_in: ``(B, L, 1, X, Y, Z)`` context images in [0, 1].
            context_out: ``(B, L, 1, X, Y, Z)`` context outputs in [0, 1].
            ar_in: ``(B, 1, 1, X, Y, Z)`` previous level's target image, or None.
            ar_out: ``(B, 1, 1, X, Y, Z)`` previous level's prediction, or None.
            context_batch: contexts per mini-batch (memory knob; the result does not change).
            guided: a registration-guided call: the contexts are deformably aligned to the
                target and ``ar_out`` is their fused masks, which a network with a prior gate
                starts from (``ar_in`` is then the target itself).

        Returns:
            ``(B, 1, X, Y, Z)`` regression map (masks: ``> 0.5``).
        """
        state = self.encode_target(target)
        semantic = self.encode_contexts(state, context_in, context_out, context_batch=context_batch)
        ar = None
        if ar_in is not None and ar_out is not None:
            ar = self.encode_contexts(state, ar_in, ar_out, autoregressive=True)
        prior = None
        if guided:
            if ar_out is None:
                raise ValueError("a guided call needs the prior as ar_out")
            prior = ar_out[:, 0] if self.config.prior_gate else None
        return self.decode(state, semantic, ar, prior)
