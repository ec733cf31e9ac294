"""Map the authors' released state dict onto :class:`~medverse.model.network.MedverseNet`.

Pure functions, no IO. The released Lightning checkpoint stores keys such as
``net.context_unet.enc_blocks.0.context_conv.module.layers.0.weight``; ours read
``context_unet.enc_blocks.0.res.layers.0.weight``. The mapping strips ``net.``, drops
``.module`` wrappers and renames through the short table below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from medverse.errors import CheckpointError
from medverse.model.config import ModelConfig

__all__ = ["convert_official_state_dict", "infer_config", "is_official_state_dict", "RENAMES"]

RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.module\.", "."),
    (r"\.(target|context)_conv_layer\.", "."),  # up-sampling merge conv
    (r"\.(target|context)_linear_layer\.", "."),  # down-sampling conv
    (r"\.(target|context)_conv\.", ".res."),  # residual unit of a stage
    (r"(^|\.)(target|context)_embedding\.", r"\1embedding."),  # 1x1x1 input embedding
    (r"^target_decoder\.output_block\.block\.0\.", "target_decoder.output_block.res."),
    (r"^target_decoder\.output_block\.block\.1\.", "target_decoder.output_block.head."),
)
_SENTINEL = "context_unet.enc_blocks.0.context_conv.module.layers.0.weight"


def _strip_prefix(key: str) -> str:
    for prefix in ("net.", "model.net.", "module.net."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def is_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys use the released naming (with or without ``net.``)."""
    return any(_strip_prefix(k) == _SENTINEL for k in state_dict)


def convert_key(key: str) -> str:
    """One released key → our key (keys already in our naming pass through)."""
    key = _strip_prefix(key)
    for pattern, repl in RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename a released (or already converted) state dict to our keys.

    Args:
        state_dict: a Lightning ``state_dict`` (keys with ``net.``), a bare network state dict,
            or a checkpoint dict holding one under ``"state_dict"``.

    Returns:
        A new dict in our naming; tensors are shared, not copied.

    Raises:
        CheckpointError: when two keys collapse onto the same name.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]  # type: ignore[assignment]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = convert_key(key)
        if new in out:
            raise CheckpointError(f"keys collide after renaming: {key!r} -> {new!r}")
        out[new] = value
    return out


def infer_config(state_dict: Mapping[str, torch.Tensor], *, window: int = 128) -> ModelConfig:
    """Read the architecture off tensor shapes of a state dict in our naming.

    Args:
        state_dict: output of :func:`convert_official_state_dict`.
        window: window edge (not stored in the weights; the released model used 128).
    """
    try:
        channels = []
        i = 0
        while f"target_encoder.enc_blocks.{i}.res.layers.0.weight" in state_dict:
            channels.append(
                int(state_dict[f"target_encoder.enc_blocks.{i}.res.layers.0.weight"].shape[0])
            )
            i += 1
        channels.append(int(state_dict["target_decoder.enc_blocks.0.res.layers.0.weight"].shape[0]))
        convs = sum(
            1
            for k in state_dict
            if re.fullmatch(r"target_encoder\.enc_blocks\.0\.res\.layers\.\d+\.weight", k)
        )
        table = state_dict["sincos_pos_embed"]
        width = int(table.shape[-1])
        patches = round(int(table.shape[-2]) ** (1 / 3))
    except KeyError as err:
        raise CheckpointError(
            f"not a Medverse state dict: missing key {err.args[0]!r} "
            f"(found {len(state_dict)} keys, e.g. {sorted(state_dict)[:3]})"
        ) from None
    if len(channels) < 2 or patches**3 != int(table.shape[-2]):
        raise CheckpointError(
            f"cannot read the architecture from this state dict (channels {channels})"
        )
    return ModelConfig(
        channels=tuple(channels),
        convs_per_stage=convs,
        bam_patches=patches,
        bam_width=width,
        window=window,
    )
