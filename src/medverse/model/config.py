"""Architecture configuration of the Medverse network."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from medverse.errors import InputError

__all__ = ["ModelConfig", "TOKEN_LAYOUTS"]

TOKEN_LAYOUTS = ("strided", "contiguous")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`~medverse.model.network.MedverseNet`.

    Each field maps to the released code's name (``ours`` ↔ ``released``):
    ``channels`` ↔ ``nb_inner_channels``, ``convs_per_stage`` ↔ ``nb_conv_layers_per_stage``,
    ``bam_patches`` ↔ ``bam_patch_num``, ``bam_width`` ↔ ``bam_hidden_size``,
    ``window`` ↔ ``img_size``.

    Args:
        channels: feature channels per stage, finest first; ``len(channels)`` stages.
        convs_per_stage: 3x3x3 convolutions in every residual unit.
        bam_patches: tokens per axis in the blockwise cross-attention (``p``; ``p**3`` tokens).
        bam_width: width of the query/key projection and of the sin-cos table.
        window: edge of the cubic window the network is run on (any multiple of
            ``2**(len(channels)-1) * bam_patches`` works; the released model used 128).
        token_layout: ``"strided"`` (released code, needed by released weights) or
            ``"contiguous"`` (the paper's description).
        input_skip: not in the released architecture (False for it). True blends the target
            into the output per voxel, ``y = h + gate(f) * (target - h)`` with ``h`` the head's
            output and ``gate`` a zero-initialised 1x1x1 conv of the last decoder features
            ``f``: a context-dependent "keep the input" path (~1 for mild enhancement, ~brain
            mask for skull stripping, ~0 for segmentation). Zero-initialised, it leaves a
            network's function unchanged, so it can be added to trained weights.
        prior_gate: not in the released architecture (False for it). True adds a second
            zero-initialised 1x1x1 conv ``g`` of the last decoder features, used only when the
            network is given a prior (a registration-guided call, where the AR pair carries the
            target image and the fused, deformably warped context masks):
            ``y = prior + g(f) * (h - prior)``. At ``g = 0`` the output is the prior itself, so a
            network grown with this gate starts exactly at label fusion and training can only
            move it where its own head ``h`` (which reads the target image and the aligned
            contexts) does better. Without a prior the network is unchanged.
        guided_refiner: not in the released architecture (0 for it). With ``prior_gate``, a
            positive width adds a small convolutional head used only in a registration-guided
            call: two 3x3x3 convolutions of this width (GELU) over the last decoder features,
            the prior and the target window, then a zero-initialised 1x1x1 convolution whose
            output is added to the gated output: ``y = prior + g(f) * (h - prior) +
            r(f, prior, x)``. It sees each voxel's 5x5x5 neighbourhood of the target image
            next to the fused masks, so it can move a fused boundary onto the target's own
            edge. Zero-initialised and never used without a prior, it can be grown onto trained
            weights and trained alone without changing any unguided call.

    Example:
        >>> ModelConfig(channels=(8, 16, 32, 64, 128), window=64).window
        64
    """

    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    convs_per_stage: int = 2
    bam_patches: int = 4
    bam_width: int = 66
    window: int = 128
    token_layout: str = "strided"
    input_skip: bool = False
    prior_gate: bool = False
    guided_refiner: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        for name in ("input_skip", "prior_gate"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.guided_refiner, bool) or not isinstance(self.guided_refiner, int):
            raise InputError(f"guided_refiner must be a width >= 0, got {self.guided_refiner!r}")
        if self.guided_refiner < 0:
            raise InputError(f"guided_refiner must be a width >= 0, got {self.guided_refiner}")
        if self.guided_refiner and not self.prior_gate:
            raise InputError("guided_refiner needs prior_gate: true (it refines a guided call)")
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise InputError(f"channels must list at least 2 positive widths, got {self.channels}")
        if self.convs_per_stage < 1:
            raise InputError(f"convs_per_stage must be >= 1, got {self.convs_per_stage}")
        if self.bam_patches < 1:
            raise InputError(f"bam_patches must be >= 1, got {self.bam_patches}")
        if self.bam_width < 6 or self.bam_width % 6:
            raise InputError(
                f"bam_width must be a positive multiple of 6 (sin/cos over 3 axes), got {self.bam_width}"
            )
        if self.token_layout not in TOKEN_LAYOUTS:
            raise InputError(
                f"token_layout must be one of {TOKEN_LAYOUTS}, got {self.token_layout!r}"
            )
        if self.window % self.window_multiple:
            raise InputError(
                f"window {self.window} must be a multiple of {self.window_multiple} "
                f"(2**(stages-1) * bam_patches for {len(self.channels)} stages)"
            )

    @property
    def num_stages(self) -> int:
        return len(self.channels)

    @property
    def window_multiple(self) -> int:
        """Every spatial size the network accepts is a multiple of this."""
        return 2 ** (self.num_stages - 1) * self.bam_patches

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; fields a file lacks take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown ModelConfig fields {unknown}; valid: {sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))
