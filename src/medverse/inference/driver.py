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

**Adaptive refinement** (``refine="adaptive"``, ours; segmentation only): at each finer level of
the coarse-to-fine loop, a window whose AR output crop (the up-sampled, clamped coarser
prediction) is certain everywhere (every voxel of every class <= :data:`CERTAIN_LOW` or >=
:data:`CERTAIN_HIGH`) and has no boundary (the crop thresholded at :data:`BOUNDARY_THRESHOLD` is
all one side, for every class) is not run through the network: it takes the AR output crop. The
split happens inside the predictor that MONAI calls, so MONAI's window enumeration and Gaussian
blending are unchanged, and a level on which every window runs gives ``refine="all"``'s output.
Neither the level-1 pass (it has no AR pair) nor the registration-guided pass is ever skipped;
image tasks always run every window.
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
from medverse.inference.allocator import keep_freed_memory
from medverse.inference.pyramid import LEVEL_RULES, LevelPlan, plan_levels
from medverse.inference.window import crop_windows, predict_window
from medverse.model.network import MedverseNet

__all__ = [
    "BOUNDARY_THRESHOLD",
    "CERTAIN_HIGH",
    "CERTAIN_LOW",
    "REFINE_MODES",
    "InferenceConfig",
    "InferenceResult",
    "PRECISIONS",
    "autocast_dtype",
    "needs_refinement",
    "resize",
    "run_inference",
]

log = logging.getLogger(__name__)

#: ``"all"``: every window of every level runs the network (the released method).
#: ``"adaptive"``: fine-level windows where the coarser prediction is certain are copied from it.
REFINE_MODES = ("all", "adaptive")
#: A segmentation voxel of the up-sampled coarser prediction is certain at or below this ...
CERTAIN_LOW = 0.05
#: ... or at or above this; strictly between the two it is uncertain and its window runs.
CERTAIN_HIGH = 0.95
#: The coarser prediction thresholded here must be all background or all foreground (per
#: class) for its window to be skipped: a label edge always runs.
BOUNDARY_THRESHOLD = 0.5
#: ``"auto"``: bf16 autocast on CUDA, float32 elsewhere; ``"fp32"``: float32 everywhere;
#: ``"bf16"``: bf16 autocast on any device (CPU too: slower there, for checking only).
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class InferenceConfig:
    """Settings of the coarse-to-fine driver.

    Args:
        compat: which method to follow, ``"medverse"`` (ours) or ``"released"`` (the
            authors'). It sets the level rule (:attr:`level_rule`: per-axis levels, never
            squash; or the authors' plan including the squash of thin levels to ``W**3``), and
            more than the level plan: ``"released"`` runs every window (no ``refine``) and
            :class:`~medverse.inference.predictor.Predictor` then uses the contexts as given
            (``align="auto"`` means ``"physical"``). Training, which has no alignment, sets only
            the level rule (``TrainConfig.level_rule``).
        overlap: sliding-window overlap (released: 0.1).
        sw_batch_size: windows per predictor call (on an accelerator one network call; on the
            CPU the network runs them one at a time, which is faster there).
        context_batch: contexts per mini-batch inside the network (memory knob; None = all).
        sigma_scale: Gaussian blending sigma as a fraction of the window (released: 0.125).
        progress: tqdm bar over the windows of each level.
        refine: ``"all"`` (every window runs) or ``"adaptive"``: at the finer levels of a
            segmentation, windows where the up-sampled coarser prediction is certain and has no
            boundary take that prediction instead of a network call (see the module doc).
            ``compat="released"`` always runs every window: asking for both is an error.
        precision: ``"auto"`` (bf16 autocast on CUDA, float32 on CPU), ``"fp32"`` or
            ``"bf16"`` (:data:`PRECISIONS`). Only the network calls run under autocast; the
            blending, resampling and the output stay float32.
    """

    compat: str = "medverse"
    overlap: float = 0.1
    sw_batch_size: int = 1
    context_batch: int | None = 2
    sigma_scale: float = 0.125
    progress: bool = False
    refine: str = "all"
    precision: str = "auto"

    @property
    def level_rule(self) -> str:
        """The level rule of :func:`~medverse.inference.pyramid.plan_levels` that ``compat`` sets."""
        return self.compat

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.compat not in LEVEL_RULES:
            raise InputError(f"compat must be one of {LEVEL_RULES}, got {self.compat!r}")
        if self.refine not in REFINE_MODES:
            raise InputError(f"refine must be one of {REFINE_MODES}, got {self.refine!r}")
        if self.refine == "adaptive" and self.compat == "released":
            raise InputError(
                "refine='adaptive' cannot go with compat='released': the released method runs "
                "every window; use refine='all' or compat='medverse'"
            )
        if not 0 <= self.overlap < 1:
            raise InputError(f"overlap must be >= 0 and < 1, got {self.overlap}")
        if self.sw_batch_size < 1:
            raise InputError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if self.context_batch is not None and self.context_batch < 1:
            raise InputError(f"context_batch must be >= 1 or None, got {self.context_batch}")


@dataclass
class InferenceResult:
    """Output ``(B, K, X, Y, Z)`` plus what was done.

    ``num_windows[i]``: windows the network ran on in pass ``i`` (coarse to fine);
    ``num_skipped[i]``: windows of that pass that took the up-sampled coarser prediction instead
    (``refine="adaptive"``; always 0 with ``"all"``).
    """

    output: torch.Tensor
    plan: LevelPlan
    num_windows: list[int] = field(default_factory=list)
    num_skipped: list[int] = field(default_factory=list)
    level_outputs: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0


def resize(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resampling with ``align_corners=True`` of ``(B, ..., X, Y, Z)`` to ``shape``.

    A tensor already of ``shape`` is returned as it is, whatever its dtype. Masks kept compact
    (``bool`` or ``uint8``) are resampled as float32 one channel at a time, so that no float32
    copy of every mask is held at once; the values are those of the float32 masks resampled."""
    if tuple(x.shape[-3:]) == tuple(shape):
        return x
    lead = x.shape[:-3]
    flat = x.reshape(lead[0], -1, *x.shape[-3:])
    if flat.is_floating_point():
        out = F.interpolate(flat, size=tuple(shape), mode="trilinear", align_corners=True)
    else:
        out = flat.new_empty((*flat.shape[:2], *shape), dtype=torch.float32)
        for c in range(flat.shape[1]):
            out[:, c : c + 1] = F.interpolate(
                flat[:, c : c + 1].float(), size=tuple(shape), mode="trilinear", align_corners=True
            )
    return out.reshape(*lead, *shape)


def _pad_end(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the last three axes at their end up to ``shape``."""
    pads: list[int] = []
    for have, want in zip(reversed(x.shape[-3:]), reversed(shape)):
        pads += [0, max(0, want - have)]
    return F.pad(x, pads) if any(pads) else x


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of the network calls for ``precision`` on ``device`` (None: float32).

    Example:
        >>> autocast_dtype("auto", "cpu") is None, autocast_dtype("bf16", "cpu")
        (True, torch.bfloat16)
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kind = torch.device(device).type
    if precision == "bf16" or (precision == "auto" and kind == "cuda"):
        return torch.bfloat16
    return None


def needs_refinement(ar_out: torch.Tensor) -> torch.Tensor:
    """Which windows of a segmentation level must run: ``(n,)`` booleans.

    A window runs when any voxel of any class of its AR output crop lies strictly between
    :data:`CERTAIN_LOW` and :data:`CERTAIN_HIGH`, or when the crop thresholded at
    :data:`BOUNDARY_THRESHOLD` has both sides (a label edge), in any class.

    Args:
        ar_out: ``(n, 1, K, X, Y, Z)``: the up-sampled coarser prediction (clamped to [0, 1])
            cropped at ``n`` windows.

    Example:
        >>> crops = torch.zeros(3, 1, 1, 4, 4, 4)
        >>> crops[1, ..., 0, 0, 0] = 0.5  # uncertain voxel
        >>> crops[2, ..., :2, :, :] = 1.0  # certain, but a boundary
        >>> needs_refinement(crops).tolist()
        [False, True, True]
    """
    flat = ar_out.reshape(ar_out.shape[0], -1)
    uncertain = ((flat > CERTAIN_LOW) & (flat < CERTAIN_HIGH)).any(dim=1)
    per_class = ar_out.reshape(*ar_out.shape[:3], -1) > BOUNDARY_THRESHOLD
    mixed = (per_class.any(dim=-1) & ~per_class.all(dim=-1)).flatten(1).any(dim=1)
    return uncertain | mixed


def _sliding(
    net: MedverseNet,
    target: torch.Tensor,
    context_in: torch.Tensor,
    context_out: torch.Tensor,
    ar: tuple[torch.Tensor, torch.Tensor] | None,
    cfg: InferenceConfig,
    guided: bool = False,
    adaptive: bool = False,
) -> tuple[torch.Tensor, int, int]:
    """Sliding windows over one level (all inputs on the same grid, every axis >= window).

    ``adaptive`` (needs ``ar``): windows that :func:`needs_refinement` rejects return their AR
    output crop instead of running the network. Returns the stitched output, the number of
    windows run and the number skipped.
    """
    window = net.config.window
    count = skipped = 0
    dtype = autocast_dtype(cfg.precision, target.device)

    def run(
        win: torch.Tensor,
        slices: list[list[slice]],
        ar_in: torch.Tensor | None,
        ar_out: torch.Tensor | None,
    ) -> torch.Tensor:
        if win.device.type == "cpu" and len(slices) > 1:
            # The network runs one window at a time on the CPU (predict_window): crop each
            # window's contexts when it runs, as views of the volumes, instead of a copy of
            # every window's contexts at once.
            def part(x: torch.Tensor | None, i: int) -> torch.Tensor | None:
                return None if x is None else x[i : i + 1]

            return torch.cat(
                [
                    run(win[i : i + 1], slices[i : i + 1], part(ar_in, i), part(ar_out, i))
                    for i in range(len(slices))
                ]
            )
        with torch.autocast(
            win.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
        ):
            out = predict_window(
                net,
                win,
                crop_windows(context_in, slices),
                crop_windows(context_out, slices),
                ar_in,
                ar_out,
                context_batch=cfg.context_batch,
                guided=guided,
            )
        return out.float()

    def network_on_windows(win: torch.Tensor, slices: list[list[slice]]) -> torch.Tensor:
        nonlocal count, skipped
        ar_in = ar_out = None
        if ar is not None:
            ar_in, ar_out = crop_windows(ar[0], slices), crop_windows(ar[1], slices)
        if not adaptive or ar_in is None or ar_out is None:
            count += len(slices)
            return run(win, slices, ar_in, ar_out)
        keep = needs_refinement(ar_out)
        todo = [i for i, flag in enumerate(keep.tolist()) if flag]
        count += len(todo)
        skipped += len(slices) - len(todo)
        if len(todo) == len(slices):
            return run(win, slices, ar_in, ar_out)
        out = ar_out[:, 0].to(win.dtype).clone()  # (n, K, w, w, w): the coarser prediction
        if todo:
            index = torch.tensor(todo, device=win.device)
            refined = run(win[index], [slices[i] for i in todo], ar_in[index], ar_out[index])
            out[index] = refined.to(out.dtype)
        return out

    out = sliding_window_inference(
        target,
        roi_size=(window,) * 3,
        sw_batch_size=cfg.sw_batch_size,
        predictor=network_on_windows,  # MONAI's name for the function it calls on windows
        overlap=cfg.overlap,
        mode="gaussian",
        sigma_scale=cfg.sigma_scale,
        padding_mode="constant",
        cval=0.0,
        progress=cfg.progress,
        with_coord=True,
    )
    return out, count, skipped  # type: ignore[return-value]


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
    segmentation: bool = False,
) -> InferenceResult:
    """Full-resolution prediction of a whole volume, coarse to fine.

    Args:
        net: the network (eval mode).
        target: ``(B, 1, X, Y, Z)`` normalised to [0, 1].
        context_in: ``(B, L, 1, X, Y, Z)`` on the target grid, normalised.
        context_out: ``(B, L, K, X, Y, Z)``: ``K`` outputs per context (one per class). Masks
            may be given as ``bool`` or ``uint8`` (0/1): they stay so, each window's crop is a
            view of them, and they become float32 only a mini-batch of contexts at a time inside
            the network (the same output as float32 masks, with less memory).
        config: driver settings.
        return_levels: keep each level's raw network output (on the grid it was run on).
        on_level: called with (level index, number of levels) before each level.
        prior: ``(B, K, X, Y, Z)`` in [0, 1]: a registration-guided call (contexts deformably
            registered to the target, ``prior`` their fused masks). Only the full-resolution
            level runs, with the AR pair (target, prior); ``plan`` still describes the volume.
        segmentation: the outputs are masks; only then does ``config.refine == "adaptive"``
            skip windows (image tasks always run every window).

    Returns:
        :class:`InferenceResult` with ``output`` ``(B, K, X, Y, Z)`` (raw regression map).

    Raises:
        ResourceError: out of memory, with the knobs to lower.
    """
    cfg = config or InferenceConfig()
    if target.device.type == "cpu":
        keep_freed_memory()  # the maps of every window reuse freed memory (allocator.py)
    start = time.perf_counter()
    window = net.config.window
    shape = tuple(target.shape[-3:])
    plan = plan_levels(shape, window, level_rule=cfg.level_rule, leading=tuple(target.shape[:2]))
    target = _pad_end(target, plan.padded_shape)
    context_in = _pad_end(context_in, plan.padded_shape)
    context_out = _pad_end(context_out, plan.padded_shape)
    result = InferenceResult(output=target, plan=plan)
    adaptive = cfg.refine == "adaptive" and segmentation
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
                prev_pred, count, skipped = _sliding(
                    net,
                    _pad_end(target, grid),
                    _pad_end(context_in, grid),
                    _pad_end(context_out, grid),
                    (_pad_end(target[:, None], grid), padded_prior[:, None]),
                    cfg,
                    guided=True,
                )
                result.num_windows.append(count)
                result.num_skipped.append(skipped)
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
                pred, count, skipped = _sliding(
                    net,
                    _pad_end(tgt, grid),
                    _pad_end(cin, grid),
                    _pad_end(cout, grid),
                    None if ar is None else (_pad_end(ar[0], grid), _pad_end(ar[1], grid)),
                    cfg,
                    adaptive=adaptive and ar is not None,
                )
                pred = pred[..., : run_shape[0], : run_shape[1], : run_shape[2]]
                result.num_windows.append(count)
                result.num_skipped.append(skipped)
                if return_levels:
                    result.level_outputs.append(pred)
                prev_pred = resize(pred, level.shape)
                prev_target = resize(tgt, level.shape)
                log.debug(
                    "level %d/%d %s: %d windows run, %d skipped",
                    level.index,
                    plan.num_levels,
                    level.shape,
                    count,
                    skipped,
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
