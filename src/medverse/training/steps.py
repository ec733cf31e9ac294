"""The steps of a run: episodes -> coarse-to-fine windows -> one optimiser step.

One optimiser step (:func:`train_step`) takes a batch of windows built by :class:`StepBuilder`:

1. a step generator seeded by ``(seed, step)`` draws the number of contexts ``L`` and whether
   the step is a level-1 pass or a fine-level window (:mod:`medverse.training.coarse_to_fine`);
2. episode ``step * batch_size + j`` of the :class:`~medverse.data.episodes.EpisodeSampler` for
   ``L`` contexts is drawn on its full grid, and a generator seeded by ``(seed, step, j)`` turns
   it into a window.

Nothing depends on the rank or on the process history, so a resumed run and a run on any
number of processes see the same episodes. :func:`validation_episodes` draws the fixed
held-out episodes from a stream of their own.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from medverse.errors import InputError
from medverse.inference.pyramid import plan_levels
from medverse.training.coarse_to_fine import (
    WindowModel,
    choose_ar_mode,
    collate_windows,
    episode_to_window,
)
from medverse.training.config import TrainConfig
from medverse.training.distributed import DistInfo, all_reduce_min, shard
from medverse.training.losses import episode_loss

__all__ = ["StepBuilder", "train_step", "validation_episodes"]

_VAL_SEED_OFFSET = 1_000_003


_GUIDED_SEED_OFFSET = 2_000_003  # guided steps draw their episodes from a stream of their own


def _sampler(
    datasets: list,
    config: TrainConfig,
    num_contexts: int,
    *,
    seed: int,
    augment: bool,
    guided: bool = False,
    registrar=None,
):
    """Episodes of the run; ``guided``: segmentation only, contexts registered to the target
    (by ``registrar``, a :class:`~medverse.training.registered.ContextRegistrar`, or simulated
    when None)."""
    from medverse.data.episodes import EpisodeSampler

    return EpisodeSampler(
        datasets,
        num_contexts=num_contexts,
        window=None,
        task_weights={"segmentation": 1.0} if guided else config.task_weights,
        enhancements=config.enhancements,
        max_classes=config.max_classes,
        augment=augment,
        aligned_prob=1.0 if guided else 0.0,
        residual_voxels=config.residual_voxels,
        registrar=registrar if guided else None,
        seed=seed + _GUIDED_SEED_OFFSET if guided else seed,
    )


def validation_episodes(datasets: list, config: TrainConfig) -> list:
    """The fixed held-out episodes (no augmentation), the same at every validation."""
    if not datasets or not config.num_val_episodes:
        return []
    sampler = _sampler(
        datasets,
        config,
        config.val_num_contexts,
        seed=config.seed + _VAL_SEED_OFFSET,
        augment=False,
    )
    return [sampler.sample(i) for i in range(config.num_val_episodes)]


class StepBuilder:
    """Builds this rank's share of the windows of any step; a pure function of the step.

    Args:
        datasets: training datasets.
        config: the run's configuration.
        info: rank and world size.
    """

    def __init__(self, datasets: list, config: TrainConfig, info: DistInfo | None = None):
        self.datasets = datasets
        self.config = config
        self.info = info or DistInfo()
        self.offsets = shard(config.batch_size, self.info.rank, self.info.world_size)
        self._samplers: dict[tuple[int, bool], Any] = {}
        self.registrar = None
        if config.guided_prob > 0 and config.guided_contexts == "registered":
            from medverse.registration.cache import RegistrationCache
            from medverse.training.registered import ContextRegistrar

            self.registrar = ContextRegistrar(RegistrationCache(config.registration_cache))

    def sampler(self, num_contexts: int, guided: bool = False):
        key = (num_contexts, guided)
        if key not in self._samplers:
            self._samplers[key] = _sampler(
                self.datasets,
                self.config,
                num_contexts,
                seed=self.config.seed,
                augment=self.config.augment,
                guided=guided,
                registrar=self.registrar,
            )
        return self._samplers[key]

    def state_dict(self) -> dict[str, Any]:
        """What decides future episodes (the step is stored beside it)."""
        return {"seed": self.config.seed, "batch_size": self.config.batch_size}

    def check_state(self, state: dict[str, Any], where: str) -> None:
        if state.get("seed") != self.config.seed:
            raise InputError(
                f"{where}: the checkpoint's episodes were drawn with seed {state.get('seed')}, "
                f"the config says {self.config.seed}; resume with the same seed"
            )

    def plan(self, step: int) -> tuple[int, bool]:
        """``(num_contexts, level-1 pass?)`` of a step."""
        rng = np.random.default_rng([self.config.seed, step, 0])
        low, high = self.config.num_contexts
        num_contexts = int(rng.integers(low, high + 1))
        coarse = bool(rng.random() < self.config.level1_prob)
        return num_contexts, coarse

    def is_guided(self, step: int) -> bool:
        """Whether ``step`` trains the registration-guided call (``guided_prob``)."""
        if self.config.guided_prob <= 0:
            return False
        return bool(
            np.random.default_rng([self.config.seed, step, 1]).random() < self.config.guided_prob
        )

    def build(self, step: int, window_model: WindowModel | None = None) -> dict:
        """This rank's windows of ``step``, collated (see :func:`collate_windows`)."""
        cfg = self.config
        num_contexts, coarse = self.plan(step)
        guided = self.is_guided(step)
        sampler = self.sampler(num_contexts, guided)
        episodes = [sampler.sample(step * cfg.batch_size + j) for j in self.offsets]
        window = cfg.window
        levels = min(
            plan_levels(e.target.shape[-3:], window, level_rule=cfg.level_rule).num_levels
            for e in episodes
        )
        # a fine step needs an AR pair for every episode of the global batch
        if all_reduce_min(levels, self.info) < 2:
            coarse = True
        windows = []
        for j, episode in zip(self.offsets, episodes):
            rng = np.random.default_rng([cfg.seed, step, j + 1])
            mode = "degraded" if coarse else choose_ar_mode(cfg.ar_source, cfg.ar_self_prob, rng)
            windows.append(
                episode_to_window(
                    episode,
                    window,
                    rng,
                    coarse=coarse,
                    ar_mode=mode,
                    level_rule=cfg.level_rule,
                    foreground_crop_prob=cfg.foreground_crop_prob,
                    window_model=window_model if mode == "self" and not guided else None,
                    guided=guided,
                )
            )
        batch = collate_windows(windows)
        common = all_reduce_min(batch["context_in"].shape[1], self.info)
        batch["context_in"] = batch["context_in"][:, :common]
        batch["context_out"] = batch["context_out"][:, :common]
        batch["pass"] = "guided" if guided else "level1" if coarse else "fine"
        batch["tasks"] = [e.task for e in episodes]
        return batch


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """bf16 autocast on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The inference rule (:func:`~medverse.inference.driver.autocast_dtype`), ``off`` = fp32."""
    from medverse.inference.driver import autocast_dtype

    return autocast_dtype("fp32" if config.amp == "off" else config.amp, device)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict,
    *,
    grad_clip: float = 0.25,
    context_batch: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    loss_beta: float = 0.1,
    gradient_weight: float = 1.0,
    foreground_weight: float | None = 0.5,
    dice_weight: float = 0.0,
    info: DistInfo | None = None,
) -> dict[str, float]:
    """One optimiser step on a batch of windows (this rank's share of the global batch).

    Args:
        model: the network, possibly DDP-wrapped.
        optimizer: its optimiser.
        batch: from :meth:`StepBuilder.build` / :func:`collate_windows`.
        grad_clip: clip the global gradient norm to this (0: no clipping).
        context_batch: contexts per mini-batch in the network.
        autocast_dtype: bf16 autocast, or None for float32.
        loss_beta, gradient_weight, foreground_weight, dice_weight: loss settings.
        info: rank and world size, to average the logged losses over ranks.

    Returns:
        ``loss`` (global-batch mean), ``loss_segmentation``/``loss_image`` (NaN when the batch
        has no such episode), ``grad_norm`` (before clipping).
    """
    info = info or DistInfo()
    device = next(model.parameters()).device
    model.train()

    def to(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(device, non_blocking=True)

    with _autocast(device, autocast_dtype):
        prediction = model(
            to(batch["target"]),
            to(batch["context_in"]),
            to(batch["context_out"]),
            to(batch["ar_in"]),
            to(batch["ar_out"]),
            context_batch=context_batch,
            guided=bool(batch.get("guided", False)),
        )
    losses = episode_loss(
        prediction,
        batch["reference"].to(device),
        batch["family"],
        beta=loss_beta,
        gradient_weight=gradient_weight,
        foreground_weight=foreground_weight,
        dice_weight=dice_weight,
    )
    loss = losses.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    optimizer.step()

    is_mask = torch.tensor([f == "segmentation" for f in batch["family"]], device=device)
    detached = losses.detach().float()
    sums = torch.stack(
        [
            detached.sum(),
            torch.tensor(float(len(detached)), device=device),
            detached[is_mask].sum(),
            is_mask.sum().float(),
            detached[~is_mask].sum(),
            (~is_mask).sum().float(),
        ]
    )
    if info.distributed:
        torch.distributed.all_reduce(sums)
    total, count, seg, seg_count, img, img_count = (float(v) for v in sums.cpu())
    return {
        "loss": total / count,
        "loss_segmentation": seg / seg_count if seg_count else math.nan,
        "loss_image": img / img_count if img_count else math.nan,
        "grad_norm": float(grad_norm),
    }
