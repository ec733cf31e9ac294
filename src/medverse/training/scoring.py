"""Scoring the network on the held-out episodes while it trains.

:func:`validate` predicts each episode through the array pipeline and scores it with
:mod:`medverse.evaluation.metrics`; :func:`context_mean_dice` is the baseline it is logged
beside. (Not to be confused with :mod:`medverse.validation`, the input checks.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medverse.training.distributed import unwrap

__all__ = ["context_mean_dice", "validate"]


def _volume(tensor: torch.Tensor) -> torch.Tensor:
    """``(..., X, Y, Z)`` with leading axes of size 1 -> ``(X, Y, Z)``, as the metrics take it."""
    return tensor.reshape(tensor.shape[-3:])


def context_mean_dice(episodes: Sequence) -> float:
    """The baseline: Dice of (mean of the context masks > 0.5) vs the target mask.

    Averaged over the segmentation episodes (NaN when there is none).
    """
    from medverse.evaluation.metrics import dice

    scores = []
    for episode in episodes:
        if episode.family != "segmentation":
            continue
        mean = torch.as_tensor(np.asarray(episode.context_out)).float().mean(0)
        reference = torch.as_tensor(np.asarray(episode.target_reference))
        scores.append(dice(_volume(mean), _volume(reference)))
    scores = [s for s in scores if not math.isnan(s)]
    return float(np.mean(scores)) if scores else math.nan


@torch.no_grad()
def validate(
    model: nn.Module,
    episodes: Sequence,
    *,
    level_rule: str = "medverse",
    context_batch: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Score held-out episodes with the full coarse-to-fine inference driver.

    Each episode's whole target is predicted through the array pipeline
    (:func:`~medverse.inference.pipeline.predict_arrays`: every level, sliding windows), as a
    user would run it, and scored by :mod:`medverse.evaluation.metrics`. Segmentation: Dice of
    the label map (``output > 0.5``) vs the mask; transformation/enhancement: PSNR and SSIM of
    the output clamped to [0, 1] (data range 1).

    Args:
        model: the network (DDP wrapper accepted).
        episodes: full-grid episodes (:func:`validation_episodes`).
        level_rule: the level rule (:func:`~medverse.inference.pyramid.plan_levels`); set through
            ``InferenceConfig(compat=...)``, whose other effect, alignment, episodes do not use.
        context_batch: contexts per mini-batch.
        autocast_dtype: bf16 on CUDA, or None.

    Returns:
        ``dice``, ``psnr``, ``ssim`` (means; NaN when no episode of that kind) and
        ``dice_<task>``/``psnr_<task>`` per task.
    """
    from medverse.evaluation.metrics import dice, psnr, ssim
    from medverse.inference.driver import InferenceConfig
    from medverse.inference.pipeline import ModelInputs, predict_arrays

    net = unwrap(model)
    was_training = net.training
    net.eval()
    # the driver applies the precision to its network calls (an autocast around it would be
    # overridden there)
    precision = "fp32" if autocast_dtype is None else "bf16"
    settings = InferenceConfig(compat=level_rule, context_batch=context_batch, precision=precision)
    per_task: dict[str, list[float]] = {}
    dices: list[float] = []
    psnrs: list[float] = []
    ssims: list[float] = []
    try:
        for episode in episodes:
            segmentation = episode.family == "segmentation"
            inputs = ModelInputs.from_normalised(
                episode.target,
                episode.context_in,
                episode.context_out,
                segmentation=segmentation,
            )
            # the label map (segmentation) or the output clamped to [0, 1]
            output = predict_arrays(net, inputs, settings).array
            reference = np.asarray(episode.target_reference, dtype=np.float32)
            reference = reference.reshape(reference.shape[-3:])
            if segmentation:
                score = dice(output, reference)
                if not math.isnan(score):
                    dices.append(score)
                    per_task.setdefault(f"dice_{episode.task}", []).append(score)
                continue
            value = psnr(output, reference, data_range=1.0)
            psnrs.append(value)
            # MONAI's dense SSIMMetric (use_monai): the numbers validation has always logged; the
            # default separable window differs by float32 rounding (up to ~1e-5 on flat outputs).
            ssims.append(ssim(output, reference, data_range=1.0, use_monai=True))
            per_task.setdefault(f"psnr_{episode.task}", []).append(value)
    finally:
        net.train(was_training)
    result = {
        "dice": float(np.mean(dices)) if dices else math.nan,
        "psnr": float(np.mean(psnrs)) if psnrs else math.nan,
        "ssim": float(np.mean(ssims)) if ssims else math.nan,
    }
    result.update({k: float(np.mean(v)) for k, v in sorted(per_task.items())})
    return result
