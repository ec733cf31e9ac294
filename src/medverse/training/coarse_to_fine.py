"""Coarse-to-fine training windows (METHOD.md §3 seen from the training side).

Inference runs a level-1 pass over the whole volume, then finer levels whose windows also read an
autoregressive (AR) pair: the previous level's target image and prediction, up-sampled. Training
must show the network both situations, so each step is one of:

* **level-1 pass** (probability ``level1_prob``, and always when the volume fits one window):
  every volume of the episode (target, reference, context images and outputs) is resampled to
  the level-1 shape of the inference level plan (:func:`~medverse.inference.pyramid.plan_levels`;
  squashed to the window under the ``"released"`` rule), zero-padded to the window; no AR pair.
* **fine-level window**: a level ``t`` in ``2..T`` is drawn uniformly, every volume is resampled
  to that level and one window is cropped at a random position (centred on the target's
  foreground with probability ``foreground_crop_prob``), the same for every volume. The AR pair
  is built from level ``t-1`` exactly as the inference driver builds it: the target image
  resampled down to level ``t-1`` and back up (trilinear, ``align_corners=True``, i.e.
  :func:`medverse.inference.driver.resize`), and a coarse output that is either

  - ``"degraded"`` (default): the ground truth degraded the same way (down to level ``t-1``,
    back up, clamped to [0, 1]); or
  - ``"self"``: the model's own level ``t-1`` prediction (no gradient), up-sampled and clamped.
    For ``t - 1 = 1`` this is the exact inference level-1 pass; for deeper levels the coarse
    prediction is made on one coarse window around the fine window (with a degraded AR pair of
    its own) and the degraded ground truth is kept elsewhere, which costs one extra forward
    instead of a whole sliding-window level.

  ``"degraded"`` is the default because it is cheap (no extra forward pass) and stable early in
  training, when the model's own coarse predictions are noise that would teach the fine level to
  ignore its AR context. ``"self"`` is more faithful to inference (the fine level learns to
  correct the coarse level's actual mistakes) and is the better choice to fine-tune a model that
  already predicts well; ``"mixed"`` draws between the two per episode. Measured on a tiny model
  (400 CPU steps, 32^3 synthetic subjects, four labels; single runs): with ``"degraded"`` the
  fine level lowered the full-inference Dice below the level-1 pass alone (0.363 vs 0.436),
  ``"mixed"`` gave 0.372 and ``"self"`` 0.394, so short runs may prefer ``"mixed"``.

A third kind of step trains the **registration-guided** call (``--align deformable``): the
episode's contexts are registered to the target (``EpisodeSampler(aligned_prob=...)``), one
window is cropped at the finest level (the episode's own grid), and the AR pair is the target
itself and the prior, the mean of the (soft) context masks, exactly as the guided inference builds
it (``guided=True``).

All randomness comes from the ``numpy`` generator passed in, so a window is a pure function of
(episode, generator state) and runs reproduce across processes and resumes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medverse.errors import InputError
from medverse.inference.driver import resize
from medverse.inference.pyramid import Level, LevelPlan, plan_levels

__all__ = [
    "Predictor",
    "WindowModel",
    "TrainingWindow",
    "choose_ar_mode",
    "collate_windows",
    "episode_to_window",
    "level_run_shape",
]

#: The network on one window: ``window_model(target (1,1,X,Y,Z), context_in (1,L,1,...),
#: context_out, ar_in | None, ar_out | None)`` returns ``(1, 1, X, Y, Z)``; called without
#: gradient, on window-sized inputs. (Not :class:`medverse.Predictor`, which runs whole files.)
WindowModel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    torch.Tensor,
]
#: Old name of :data:`WindowModel`, kept for one release.
Predictor = WindowModel


@dataclass
class TrainingWindow:
    """One episode brought to one network window.

    Attributes:
        target: ``(1, W, W, W)`` target image.
        reference: ``(1, W, W, W)`` what the network should output (soft mask at coarse levels).
        context_in: ``(L, 1, W, W, W)``.
        context_out: ``(L, 1, W, W, W)``.
        ar_in: ``(1, 1, W, W, W)`` AR target image, or None (level-1 pass).
        ar_out: ``(1, 1, W, W, W)`` AR coarse output, or None.
        family: the episode's task family.
        level: 1-based level of the window; ``num_levels`` in the plan.
        ar_mode: ``"degraded"``, ``"self"``, ``"prior"`` (a guided window) or None (no AR pair).
        start: crop start at the window's level, or None (level-1 pass).
    """

    target: torch.Tensor
    reference: torch.Tensor
    context_in: torch.Tensor
    context_out: torch.Tensor
    ar_in: torch.Tensor | None
    ar_out: torch.Tensor | None
    family: str
    level: int
    num_levels: int
    ar_mode: str | None = None
    start: tuple[int, int, int] | None = None

    @property
    def guided(self) -> bool:
        """A registration-guided window (the AR output is the fused context prior)."""
        return self.ar_mode == "prior"


def level_run_shape(level: Level, window: int) -> tuple[int, int, int]:
    """The grid a level is run on: the window cube for a squashed level, else its shape."""
    return (window,) * 3 if level.squashed else level.shape


def _pad_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    pads: list[int] = []
    for have, want in zip(reversed(x.shape[-3:]), reversed(tuple(size))):
        pads += [0, max(0, int(want) - int(have))]
    return F.pad(x, pads) if any(pads) else x


def _crop(x: torch.Tensor, start: Sequence[int], window: int) -> torch.Tensor:
    x = _pad_to(x, [s + window for s in start])
    sx, sy, sz = (int(s) for s in start)
    return x[..., sx : sx + window, sy : sy + window, sz : sz + window]


def _start(
    shape: Sequence[int], window: int, rng: np.random.Generator, center: np.ndarray | None
) -> tuple[int, int, int]:
    start = []
    for axis, n in enumerate(shape):
        room = max(0, int(n) - window)
        if center is None:
            start.append(int(rng.integers(room + 1)))
        else:
            start.append(int(np.clip(int(center[axis]) - window // 2, 0, room)))
    return start[0], start[1], start[2]


def _foreground_center(
    reference: torch.Tensor, target: torch.Tensor, family: str, rng: np.random.Generator
) -> np.ndarray | None:
    """A random voxel of the structure (mask > 0.5) or of the body (image > 10 % of range)."""
    if family == "segmentation":
        foreground = reference[0] > 0.5
    else:
        image = target[0]
        low, high = float(image.min()), float(image.max())
        foreground = image > low + 0.1 * (high - low)
    voxels = torch.nonzero(foreground)
    if len(voxels) == 0:
        return None
    return voxels[int(rng.integers(len(voxels)))].numpy()


def choose_ar_mode(ar_source: str, ar_self_prob: float, rng: np.random.Generator) -> str:
    """``"degraded"`` or ``"self"`` for one fine window (``"mixed"`` draws, using ``rng``)."""
    if ar_source == "mixed":
        return "self" if rng.random() < ar_self_prob else "degraded"
    if ar_source not in ("degraded", "self"):
        raise InputError(f"ar_source must be 'degraded', 'self' or 'mixed', got {ar_source!r}")
    return ar_source


def _as_batch(episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    target = torch.as_tensor(np.asarray(episode.target, dtype=np.float32))[None]
    reference = torch.as_tensor(np.asarray(episode.target_reference, dtype=np.float32))[None]
    context_in = torch.as_tensor(np.asarray(episode.context_in, dtype=np.float32))[None]
    context_out = torch.as_tensor(np.asarray(episode.context_out, dtype=np.float32))[None]
    return target, reference, context_in, context_out


def _down_up(x: torch.Tensor, plan: LevelPlan, t: int, window: int) -> torch.Tensor:
    """``x`` (full resolution) as inference sees the previous level ``t-1`` from level ``t``.

    Inference resamples the padded input to level ``t-1``'s run grid, keeps the result on level
    ``t-1``'s grid, and resamples it to level ``t``'s run grid (levels are 1-based).
    """
    prev, cur = plan.levels[t - 2], plan.levels[t - 1]
    coarse = resize(resize(x, level_run_shape(prev, window)), prev.shape)
    return resize(coarse, level_run_shape(cur, window))


def episode_to_window(
    episode,
    window: int,
    rng: np.random.Generator,
    *,
    coarse: bool,
    ar_mode: str = "degraded",
    level_rule: str = "medverse",
    foreground_crop_prob: float = 0.8,
    window_model: WindowModel | None = None,
    guided: bool = False,
    predictor: WindowModel | None = None,
) -> TrainingWindow:
    """Turn a full-grid episode into one training window.

    Args:
        episode: a :class:`~medverse.data.episodes.Episode` on its full grid (``window=None``
            sampler), arrays ``(1, X, Y, Z)`` and ``(L, 1, X, Y, Z)``.
        window: the network's window edge ``W``.
        rng: draws the level, the crop position and the foreground voxel.
        coarse: True for a level-1 pass; False for a fine-level window (falls back to level 1
            when the volume has a single level).
        ar_mode: ``"degraded"`` or ``"self"`` (see the module docstring).
        level_rule: ``"medverse"`` or ``"released"`` (:func:`~medverse.inference.pyramid.plan_levels`).
        foreground_crop_prob: probability of centring the crop on the foreground.
        window_model: the network on one window (:data:`WindowModel`), for ``ar_mode="self"``.
        guided: a registration-guided window (``coarse`` and ``ar_mode`` are ignored): one
            crop of the episode's own grid, AR pair = (target, mean of the context outputs).
        predictor: old name of ``window_model``, kept for one release (a ``DeprecationWarning``).

    Returns:
        A :class:`TrainingWindow` with every tensor on a ``W**3`` grid.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> win = episode_to_window(episode, 32, rng, coarse=False)  # doctest: +SKIP
        >>> win.target.shape, win.ar_in.shape  # doctest: +SKIP
        (torch.Size([1, 32, 32, 32]), torch.Size([1, 1, 32, 32, 32]))
    """
    if predictor is not None:
        warnings.warn(
            "episode_to_window(predictor=...) is now episode_to_window(window_model=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        window_model = predictor
    if guided:
        return _guided_window(episode, window, rng, foreground_crop_prob)
    if ar_mode not in ("degraded", "self"):
        raise InputError(f"ar_mode must be 'degraded' or 'self', got {ar_mode!r}")
    if ar_mode == "self" and window_model is None:
        raise InputError("ar_mode='self' needs a window_model (the network on one window)")
    target, reference, context_in, context_out = _as_batch(episode)
    shape = tuple(int(n) for n in target.shape[-3:])
    plan = plan_levels(shape, window, level_rule=level_rule)
    # padded_shape == shape for the default rule; the released rule end-pads first
    target, reference = _pad_to(target, plan.padded_shape), _pad_to(reference, plan.padded_shape)
    context_in = _pad_to(context_in, plan.padded_shape)
    context_out = _pad_to(context_out, plan.padded_shape)
    num_levels = plan.num_levels
    full = (window,) * 3

    if coarse or num_levels == 1:
        run = level_run_shape(plan.levels[0], window)
        volumes = [resize(v, run) for v in (target, reference, context_in, context_out)]
        t, r, ci, co = (_pad_to(v, full) for v in volumes)
        return TrainingWindow(t[0], r[0], ci[0], co[0], None, None, episode.family, 1, num_levels)

    level = int(rng.integers(2, num_levels + 1))
    run = level_run_shape(plan.levels[level - 1], window)
    t_level = resize(target, run)
    r_level = resize(reference, run)
    center = None
    if rng.random() < foreground_crop_prob:
        center = _foreground_center(r_level[0], t_level[0], episode.family, rng)
    start = _start(run, window, rng, center)

    ar_in = _down_up(target, plan, level, window).clamp(0, 1)
    if ar_mode == "degraded":
        ar_out = _down_up(reference, plan, level, window)
    else:
        assert window_model is not None
        ar_out = _self_coarse(
            target, reference, context_in, context_out, plan, level, window, start, window_model
        )
    ar_out = ar_out.clamp(0, 1)
    crop = [
        _crop(v, start, window)
        for v in (
            t_level,
            r_level,
            resize(context_in, run),
            resize(context_out, run),
            ar_in,
            ar_out,
        )
    ]
    return TrainingWindow(
        target=crop[0][0],
        reference=crop[1][0],
        context_in=crop[2][0],
        context_out=crop[3][0],
        ar_in=crop[4][:, None][0],
        ar_out=crop[5][:, None][0],
        family=episode.family,
        level=level,
        num_levels=num_levels,
        ar_mode=ar_mode,
        start=start,
    )


def _guided_window(
    episode, window: int, rng: np.random.Generator, foreground_crop_prob: float
) -> TrainingWindow:
    """One window of the episode's own grid with the fused-context prior as the AR pair."""
    target, reference, context_in, context_out = _as_batch(episode)
    shape = tuple(int(n) for n in target.shape[-3:])
    prior = context_out.mean(dim=1)  # (1, 1, X, Y, Z)
    center = None
    if rng.random() < foreground_crop_prob:
        center = _foreground_center(reference[0], target[0], episode.family, rng)
    start = _start(shape, window, rng, center)
    t, r, ci, co, p = (
        _crop(v, start, window) for v in (target, reference, context_in, context_out, prior)
    )
    num_levels = plan_levels(shape, window).num_levels
    return TrainingWindow(
        target=t[0],
        reference=r[0],
        context_in=ci[0],
        context_out=co[0],
        ar_in=t[:, None][0],
        ar_out=p[:, None][0],
        family=episode.family,
        level=num_levels,
        num_levels=num_levels,
        ar_mode="prior",
        start=start,
    )


def _self_coarse(
    target: torch.Tensor,
    reference: torch.Tensor,
    context_in: torch.Tensor,
    context_out: torch.Tensor,
    plan: LevelPlan,
    level: int,
    window: int,
    start: Sequence[int],
    window_model: WindowModel,
) -> torch.Tensor:
    """The model's level ``level - 1`` prediction, brought to level ``level``'s run grid."""
    prev = plan.levels[level - 2]
    prev_run = level_run_shape(prev, window)
    cur_run = level_run_shape(plan.levels[level - 1], window)
    t_prev = resize(target, prev_run)
    ci_prev, co_prev = resize(context_in, prev_run), resize(context_out, prev_run)
    if level - 1 == 1:  # the exact level-1 pass: whole volume, no AR pair
        full = (window,) * 3
        pred = window_model(
            _pad_to(t_prev, full), _pad_to(ci_prev, full), _pad_to(co_prev, full), None, None
        )
        pred = pred[..., : prev_run[0], : prev_run[1], : prev_run[2]]
    else:  # one coarse window around the fine window's footprint, degraded GT elsewhere
        pred = _down_up(reference, plan, level - 1, window).clamp(0, 1)
        ar_in = _down_up(target, plan, level - 1, window).clamp(0, 1)
        scale = [p / c for p, c in zip(prev_run, cur_run)]
        center = [int((s + window / 2) * f) for s, f in zip(start, scale)]
        coarse_start = _start(prev_run, window, np.random.default_rng(0), np.asarray(center))
        crop = [_crop(v, coarse_start, window) for v in (t_prev, ci_prev, co_prev, ar_in, pred)]
        window_pred = window_model(crop[0], crop[1], crop[2], crop[3][:, None], crop[4][:, None])
        sx, sy, sz = coarse_start
        ex, ey, ez = (min(s + window, n) for s, n in zip(coarse_start, prev_run))
        pred = pred.clone()
        pred[..., sx:ex, sy:ey, sz:ez] = window_pred[..., : ex - sx, : ey - sy, : ez - sz]
    coarse = resize(pred.float(), prev.shape)
    return resize(coarse, cur_run)


def collate_windows(windows: Sequence[TrainingWindow]) -> dict:
    """Stack windows into network inputs; contexts are cut to the smallest ``L``.

    Returns:
        ``target``, ``reference`` ``(B, 1, W, W, W)``; ``context_in``, ``context_out``
        ``(B, L, 1, W, W, W)``; ``ar_in``, ``ar_out`` ``(B, 1, 1, W, W, W)`` or None;
        ``family``, ``level`` lists.

    Raises:
        InputError: empty input, or a mix of windows with and without an AR pair.
    """
    if not windows:
        raise InputError("collate_windows needs at least one window")
    with_ar = {w.ar_in is not None for w in windows}
    if len(with_ar) != 1:
        raise InputError("a batch mixes level-1 windows (no AR pair) and fine windows")
    if len({w.guided for w in windows}) != 1:
        raise InputError("a batch mixes registration-guided windows and others")
    num_contexts = min(w.context_in.shape[0] for w in windows)
    ar_in = [w.ar_in for w in windows if w.ar_in is not None]
    ar_out = [w.ar_out for w in windows if w.ar_out is not None]
    return {
        "target": torch.stack([w.target for w in windows]),
        "reference": torch.stack([w.reference for w in windows]),
        "context_in": torch.stack([w.context_in[:num_contexts] for w in windows]),
        "context_out": torch.stack([w.context_out[:num_contexts] for w in windows]),
        "ar_in": torch.stack(ar_in) if ar_in else None,
        "ar_out": torch.stack(ar_out) if ar_out else None,
        "family": [w.family for w in windows],
        "level": [w.level for w in windows],
        "guided": windows[0].guided,
    }
