"""One network call on a batch of windows, for every class, sharing the target encoding."""

from __future__ import annotations

import torch

from medverse.errors import InputError
from medverse.model.network import MedverseNet

__all__ = ["predict_window", "crop_windows"]


def crop_windows(volume: torch.Tensor, slices: list[list[slice]]) -> torch.Tensor:
    """Crop ``(B, L, K, X, Y, Z)`` at MONAI window coordinates → ``(n, L, K, w, w, w)``.

    ``slices`` is MONAI's ``unravel_slice``: per window ``[batch, channel, x, y, z]``.

    Raises:
        InputError: ``slices`` is empty (no window size to give an empty batch).
    """
    if not slices:
        raise InputError("crop_windows needs at least one window; got an empty list of slices")
    crops = [volume[(s[0], slice(None), slice(None), *s[2:])] for s in slices]
    return crops[0] if len(crops) == 1 else torch.cat(crops)


def predict_window(
    net: MedverseNet,
    target: torch.Tensor,
    context_in: torch.Tensor,
    context_out: torch.Tensor,
    ar_in: torch.Tensor | None = None,
    ar_out: torch.Tensor | None = None,
    *,
    context_batch: int | None = None,
    guided: bool = False,
) -> torch.Tensor:
    """Predict ``K`` outputs (classes) for windows of one target.

    The target encoder runs once; the context U-Net and decoder run once per class. On the CPU
    the windows run one at a time: there a batch of windows is slower per window than one
    window (its feature maps outgrow the caches, and at 64^3 and more the allocator maps fresh
    pages for every layer's output), while on an accelerator they run as one batch.

    Args:
        net: the network.
        target: ``(n, 1, X, Y, Z)``.
        context_in: ``(n, L, 1, X, Y, Z)``.
        context_out: ``(n, L, K, X, Y, Z)``: one output channel per class.
        ar_in: ``(n, 1, 1, X, Y, Z)`` or None.
        ar_out: ``(n, 1, K, X, Y, Z)`` or None.
        context_batch: contexts per mini-batch.
        guided: a registration-guided call: ``ar_out`` is the fused prior of each class, which a
            network with a prior gate starts from.

    Returns:
        ``(n, K, X, Y, Z)``.
    """
    if guided and (ar_in is None or ar_out is None):
        raise ValueError("a guided call needs the AR pair (target, prior) as ar_in and ar_out")
    if target.device.type == "cpu" and target.shape[0] > 1:
        windows = range(target.shape[0])
        return torch.cat(
            [
                predict_window(
                    net,
                    target[i : i + 1],
                    context_in[i : i + 1],
                    context_out[i : i + 1],
                    None if ar_in is None else ar_in[i : i + 1],
                    None if ar_out is None else ar_out[i : i + 1],
                    context_batch=context_batch,
                    guided=guided,
                )
                for i in windows
            ]
        )
    state = net.encode_target(target)
    outputs = []
    for k in range(context_out.shape[2]):
        semantic = net.encode_contexts(
            state, context_in, context_out[:, :, k : k + 1], context_batch=context_batch
        )
        ar = prior = None
        if ar_in is not None and ar_out is not None:
            ar = net.encode_contexts(state, ar_in, ar_out[:, :, k : k + 1], autoregressive=True)
            if guided and net.config.prior_gate:
                prior = ar_out[:, 0, k : k + 1]
        outputs.append(net.decode(state, semantic, ar, prior))
    return torch.cat(outputs, dim=1)
