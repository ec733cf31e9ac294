"""Next-scale autoregressive inference over a whole volume (METHOD.md §3).

Level 1 sees the whole volume at the coarsest scale with no autoregressive (AR) context. Each
finer level runs MONAI's ``sliding_window_inference`` (``with_coord=True``) so the target, every
semantic context and the AR pair (previous level's target image and clamped prediction,
up-sampled) are cropped at the same window. Gaussian blending, overlap 0.1 by default.

A **registration-guided** call (``prior=...``, ours; ``--align deformable``) has contexts already
deformably registered to the target, so the coarse levels' job (finding the structure) is done by
registration: one sliding-window pass runs on the full-resolution grid, with the AR pair = (the
target, the prior: the fused warped context masks), and a network with a prior gate starts its
output from that prior.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from medverse.errors import InputError, ResourceError
from medverse.inference.pyramid import PLAN_RULES, LevelPlan, plan_levels
from medverse.inference.window import crop_windows, predict_window
from medverse.model.network import MedverseNet

__all__ = ["InferenceConfig", "InferenceResult", "run_inference", "resize"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceConfig:
    """Settings of the coarse-to-fine driver.

    Args:
        compat: ``"medverse"`` (per-axis levels, never squash) or ``"released"`` (the authors'
            level plan including the squash of thin levels to ``W**3``).
        overlap: sliding-window overlap (released: 0.1).
        sw_batch_size: windows per network call (more is faster on CPU, costs memory).
        context_batch: contexts per mini-batch inside the network (memory knob; None = all).
        sigma_scale: Gaussian blending sigma as a fraction of the window (released: 0.125).
        progress: tqdm bar over the windows of each level.
    """

    compat: str = "medverse"
    overlap: float = 0.1
    sw_batch_size: int = 1
    context_batch: int | None = 2
    sigma_scale: float = 0.125
    progress: bool = False

    def __post_init__(self) -> None:
        if self.compat not in PLAN_RULES:
            raise InputError(f"compat must be one of {PLAN_RULES}, got {self.compat!r}")
        if not 0 <= self.overlap < 1:
            raise InputError(f"overlap must be >= 0 and < 1, got {self.overlap}")
        if self.sw_batch_size < 1:
            raise InputError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if self.context_batch is not None and self.context_batch < 1:
            raise InputError(f"context_batch must be >= 1 or None, got {self.context_batch}")


@dataclass
class InferenceResult:
    """Output ``(B, K, X, Y, Z)`` plus what was done."""

    output: torch.Tensor
    plan: LevelPlan
    num_windows: list[int] = field(default_factory=list)
    level_outputs: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0


def resize(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resampling with ``align_corners=True`` of ``(B, ..., X, Y, Z)`` to ``shape``."""
    if tuple(x.shape[-3:]) == tuple(shape):
        return x
    lead = x.shape[:-3]
    flat = x.reshape(lead[0], -1, *x.shape[-3:])
    out = F.interpolate(flat, size=tuple(shape), mode="trilinear", align_corners=True)
    return out.reshape(*lead, *shape)


def _pad_end(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the last three axes at their end up to ``shape``."""
    pads: list[int] = []
    for have, want in zip(reversed(x.shape[-3:]), reversed(shape)):
        pads += [0, max(0, want - have)]
    return F.pad(x, pads) if any(pads) else x


def _sliding(
    net: MedverseNet,
    target: torch.Tensor,
    context_in: torch.Tensor,
    context_out: torch.Tensor,
    ar: tuple[torch.Tensor, torch.Tensor] | None,
    cfg: InferenceConfig,
    guided: bool = False,
) -> tuple[torch.Tensor, int]:
    """Sliding windows over one level (all inputs on the same grid, every axis >= window)."""
    window = net.config.window
    count = 0

    def predictor(win: torch.Tensor, slices: list[list[slice]]) -> torch.Tensor:
        nonlocal count
        count += len(slices)
        ar_in = ar_out = None
        if ar is not None:
            ar_in, ar_out = crop_windows(ar[0], slices), crop_windows(ar[1], slices)
        return predict_window(
            net,
            win,
            crop_windows(context_in, slices),
            crop_windows(context_out, slices),
            ar_in,
            ar_out,
            context_batch=cfg.context_batch,
            guided=guided,
        )

    out = sliding_window_inference(
        target,
        roi_size=(window,) * 3,
        sw_batch_size=cfg.sw_batch_size,
        predictor=predictor,
        overlap=cfg.overlap,
        mode="gaussian",
        sigma_scale=cfg.sigma_scale,
        padding_mode="constant",
        cval=0.0,
        progress=cfg.progress,
        with_coord=True,
    )
    return out, count  # type: ignore[return-value]


def run_inference(
    net: MedverseNet,
    target: torch.Tensor,
    context_in: torch.Tensor,
    context_out: torch.Tensor,
    config: InferenceConfig | None = None,
    *,
    return_levels: bool = False,
    on_level: Callable[[int, int], None] | None = None,
    prior: torch.Tensor | None = None,
) -> InferenceResult:
    """Full-resolution prediction of a whole volume, coarse to fine.

    Args:
        net: the network (eval mode).
        target: ``(B, 1, X, Y, Z)`` normalised to [0, 1].
        context_in: ``(B, L, 1, X, Y, Z)`` on the target grid, normalised.
        context_out: ``(B, L, K, X, Y, Z)``: ``K`` outputs per context (one per class).
        config: driver settings.
        return_levels: keep each level's raw network output (on the grid it was run on).
        on_level: called with (level index, number of levels) before each level.
        prior: ``(B, K, X, Y, Z)`` in [0, 1]: a registration-guided call (contexts deformably
            registered to the target, ``prior`` their fused masks). Only the full-resolution
            level runs, with the AR pair (target, prior); ``plan`` still describes the volume.

    Returns:
        :class:`InferenceResult` with ``output`` ``(B, K, X, Y, Z)`` (raw regression map).

    Raises:
        ResourceError: out of memory, with the knobs to lower.
    """
    cfg = config or InferenceConfig()
    start = time.perf_counter()
    window = net.config.window
    shape = tuple(target.shape[-3:])
    plan = plan_levels(shape, window, rule=cfg.compat, leading=tuple(target.shape[:2]))
    target = _pad_end(target, plan.padded_shape)
    context_in = _pad_end(context_in, plan.padded_shape)
    context_out = _pad_end(context_out, plan.padded_shape)
    result = InferenceResult(output=target, plan=plan)
    prev_target = prev_pred = None
    if prior is not None:
        if (
            prior.shape[:2] != context_out.shape[:1] + context_out.shape[2:3]
            or tuple(prior.shape[-3:]) != shape
        ):
            raise InputError(
                f"prior shape {tuple(prior.shape)} does not match the target {shape} with "
                f"{context_out.shape[2]} outputs"
            )
    try:
        with torch.inference_mode():
            if prior is not None:
                if on_level is not None:
                    on_level(plan.num_levels, plan.num_levels)
                grid = tuple(max(n, window) for n in target.shape[-3:])
                padded_prior = _pad_end(prior.to(target.dtype).clamp(0, 1), grid)
                prev_pred, count = _sliding(
                    net,
                    _pad_end(target, grid),
                    _pad_end(context_in, grid),
                    _pad_end(context_out, grid),
                    (_pad_end(target[:, None], grid), padded_prior[:, None]),
                    cfg,
                    guided=True,
                )
                result.num_windows.append(count)
                if return_levels:
                    x, y, z = shape
                    result.level_outputs.append(prev_pred[..., :x, :y, :z])
            coarse_to_fine = plan.levels if prior is None else ()  # guided: the one pass above
            for level in coarse_to_fine:
                if on_level is not None:
                    on_level(level.index, plan.num_levels)
                # A squashed level (released rule) resamples straight to W^3, as released.
                run_shape = (window,) * 3 if level.squashed else level.shape
                tgt = resize(target, run_shape)
                cin = resize(context_in, run_shape)
                cout = resize(context_out, run_shape)
                ar = None
                if prev_pred is not None and prev_target is not None:
                    ar_in = resize(prev_target, run_shape)[:, None]
                    ar_out = resize(prev_pred, run_shape).clamp(0, 1)[:, None]
                    ar = (ar_in, ar_out)
                grid = tuple(max(n, window) for n in run_shape)
                pred, count = _sliding(
                    net,
                    _pad_end(tgt, grid),
                    _pad_end(cin, grid),
                    _pad_end(cout, grid),
                    None if ar is None else (_pad_end(ar[0], grid), _pad_end(ar[1], grid)),
                    cfg,
                )
                pred = pred[..., : run_shape[0], : run_shape[1], : run_shape[2]]
                result.num_windows.append(count)
                if return_levels:
                    result.level_outputs.append(pred)
                prev_pred = resize(pred, level.shape)
                prev_target = resize(tgt, level.shape)
                log.debug(
                    "level %d/%d %s: %d windows", level.index, plan.num_levels, level.shape, count
                )
    except torch.OutOfMemoryError as err:
        raise ResourceError(_oom_message(target, context_in, context_out, cfg, window)) from err
    except RuntimeError as err:
        if "memory" not in str(err).lower():
            raise
        raise ResourceError(_oom_message(target, context_in, context_out, cfg, window)) from err
    assert prev_pred is not None
    x, y, z = shape
    result.output = prev_pred[..., :x, :y, :z]
    result.seconds = time.perf_counter() - start
    return result


def _oom_message(target, context_in, context_out, cfg: InferenceConfig, window: int) -> str:  # noqa: ANN001
    return (
        f"out of memory for a {tuple(target.shape[-3:])} target with {context_in.shape[1]} contexts x "
        f"{context_out.shape[2]} classes, window {window}^3, sw_batch_size {cfg.sw_batch_size}, "
        f"context_batch {cfg.context_batch}: lower --sw-batch-size and --context-batch (1 uses the "
        "least memory), use fewer contexts, or run on a machine with more memory"
    )
