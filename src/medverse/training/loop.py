"""The training loop: episodes -> coarse-to-fine windows -> AdamW steps, checkpoints, validation.

One optimiser step (:func:`train_step`) takes a batch of windows built by :class:`StepBuilder`:

1. a step generator seeded by ``(seed, step)`` draws the number of contexts ``L`` and whether
   the step is a level-1 pass or a fine-level window (:mod:`medverse.training.coarse_to_fine`);
2. episode ``step * batch_size + j`` of the :class:`~medverse.data.episodes.EpisodeSampler` for
   ``L`` contexts is drawn on its full grid, and a generator seeded by ``(seed, step, j)`` turns
   it into a window.

Nothing depends on the rank or on the process history, so a resumed run and a run on any
number of processes see the same episodes. :func:`run` adds AdamW with warm-up + cosine
decay, gradient clipping (0.25 by default, METHOD.md §4), bf16 autocast on CUDA, atomic
checkpoints (model, optimiser, scheduler, step, Python/numpy/torch RNG states, sampler state),
exact resume, a CSV log and TensorBoard scalars (rank 0), a tqdm bar with ETA (rank 0) and, at
the end, the weights exported with :func:`~medverse.checkpoint.io.save_model`.

Example:
    >>> from medverse.training import TrainConfig, run
    >>> cfg = TrainConfig(model={"channels": [4, 8, 16], "window": 16}, steps=2,
    ...                   data=[{"shape": [24, 24, 24], "num_subjects": 4}], out_dir="/tmp/r")
    >>> result = run(cfg)  # doctest: +SKIP
    >>> result.weights  # doctest: +SKIP
    PosixPath('/tmp/r/model')
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medverse.errors import InputError
from medverse.files import atomic_path, atomic_write_text
from medverse.inference.pyramid import plan_levels
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet
from medverse.training.coarse_to_fine import (
    Predictor,
    choose_ar_mode,
    collate_windows,
    episode_to_window,
)
from medverse.training.config import DataSource, TrainConfig
from medverse.training.distributed import (
    DistInfo,
    all_reduce_min,
    barrier,
    broadcast_object,
    init_distributed,
    shard,
    unwrap,
    wrap_model,
)
from medverse.training.losses import episode_loss

__all__ = [
    "CSV_COLUMNS",
    "StepBuilder",
    "TrainResult",
    "build_datasets",
    "build_model",
    "context_mean_dice",
    "latest_checkpoint",
    "lr_factor",
    "run",
    "train_step",
    "validate",
    "validation_episodes",
]

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "step",
    "lr",
    "loss",
    "loss_segmentation",
    "loss_image",
    "grad_norm",
    "num_contexts",
    "pass",
    "families",
    "seconds",
    "val_dice",
    "val_dice_baseline",
    "val_psnr",
    "val_ssim",
    "resumed_from",
    "time",
)
CHECKPOINT_VERSION = 1
_VAL_SEED_OFFSET = 1_000_003
_GUIDED_SEED_OFFSET = 2_000_003  # guided steps draw their episodes from a stream of their own


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The newest ``checkpoints/step_*.pt`` of a run folder (None when there is none)."""
    folder = Path(out_dir) / "checkpoints"
    pointer = folder / "latest.txt"
    if pointer.is_file():
        candidate = folder / pointer.read_text().strip()
        if candidate.is_file():
            return candidate
    files = sorted(folder.glob("step_*.pt"))
    return files[-1] if files else None


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _synthetic_cases(source: DataSource, template: int) -> list:
    """Subjects as :func:`~medverse.data.synthesis.write_synthetic_dataset` draws them, then warped."""
    from medverse.data.augment import SpatialAugmentation
    from medverse.data.datasets import Case
    from medverse.data.synthesis import draw_anatomy, draw_intensity_table, make_subject

    seed = source.seed + template
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(source.num_classes, rng)
    tables = [
        draw_intensity_table(source.num_classes + 1, rng) for _ in range(source.num_modalities)
    ]
    label_names = {0: "background", 1: "body"}
    label_names.update({k: f"structure_{k}" for k in range(2, source.num_classes + 1)})
    channels = tuple(f"synth{m}" for m in range(source.num_modalities))
    cases = []
    for index in range(source.num_subjects + source.num_val_cases):
        subject_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        subject = make_subject(
            source.shape,
            source.num_classes,
            source.num_modalities,
            subject_seed,
            anatomy=anatomy,
            tables=tables,
        )
        images, labels = list(subject.images), subject.labels
        if source.deformation > 0:
            warp = SpatialAugmentation(
                elastic_seed=subject_seed,
                elastic_num_control_points=4,
                elastic_max_displacement=source.deformation * min(source.shape),
            )
            *images, labels = warp([*images, labels], is_mask=[False] * len(images) + [True])
        cases.append(
            Case(
                name=f"synth_{index:04d}",
                images=np.stack(images).astype(np.float32),
                labels=labels,
                channel_names=channels,
                label_names=label_names,
                spacing=(1.0, 1.0, 1.0),
            )
        )
    return cases


def _open_nnunet(source: DataSource, name: str | None, cases: list[str] | None) -> Any:
    """An :class:`~medverse.data.datasets.NnUNetDataset` for ``source`` (a subset of ``cases``)."""
    from medverse.data.datasets import NnUNetDataset, PreprocessConfig

    assert source.path is not None  # DataSource checks it for kind "nnunet"
    return NnUNetDataset(
        source.path,
        name=name,
        cases=cases,
        weight=source.weight,
        preprocess=PreprocessConfig(spacing=source.spacing),
        cache_dir=source.cache_dir,
        labels=list(source.labels) if source.labels is not None else None,
        brain_mask_from_labels=source.brain_mask_from_labels,
        check_shapes=cases is None,
    )


def _add_mni(source: DataSource, train: list, val: list) -> None:
    """The two datasets (tissue, AAL3 regions) of a ``kind: mni`` source, training and held out."""
    from medverse.data.datasets import InMemoryDataset
    from medverse.data.mni import make_mni_cases

    name = source.name or f"mni{source.seed}"
    pairs = [
        make_mni_cases(
            index,
            seed=source.seed,
            base_shape=source.shape,
            voxel_mm=source.voxel_mm,
            deformation=source.deformation,
        )
        for index in range(source.num_subjects + source.num_val_cases)
    ]
    for k, (kind, keep) in enumerate((("tissue", True), ("regions", False))):
        cases = [pair[k] for pair in pairs]
        options = dict(weight=source.weight / 2, brain_mask_from_labels=keep)
        train.append(
            InMemoryDataset(cases[: source.num_subjects], name=f"{name}_{kind}", **options)
        )
        if source.num_val_cases >= 2:
            val.append(
                InMemoryDataset(cases[source.num_subjects :], name=f"{name}_{kind}_val", **options)
            )


def build_datasets(sources: Sequence[DataSource]) -> tuple[list, list]:
    """Training and validation datasets of every source.

    Returns:
        ``(train, val)``: lists of datasets for :class:`~medverse.data.datasets.DatasetMix`;
        ``val`` holds the held-out cases (``num_val_cases``) and may be empty.

    Raises:
        InputError: an unreadable nnU-Net folder, or too few cases left for training.
    """
    from medverse.data.datasets import InMemoryDataset

    train, val = [], []
    for i, source in enumerate(sources):
        if source.kind == "synthetic":
            for template in range(source.num_templates):
                name = source.name or f"synthetic{source.seed}"
                if source.num_templates > 1:
                    name = f"{name}_{template}"
                cases = _synthetic_cases(source, template)
                weight = source.weight / source.num_templates
                keep = dict(brain_mask_from_labels=source.brain_mask_from_labels)
                train.append(
                    InMemoryDataset(cases[: source.num_subjects], name=name, weight=weight, **keep)
                )
                if source.num_val_cases:
                    val.append(
                        InMemoryDataset(
                            cases[source.num_subjects :], name=f"{name}_val", weight=weight, **keep
                        )
                    )
            continue
        if source.kind == "mni":
            _add_mni(source, train, val)
            continue
        full = _open_nnunet(source, source.name, None)
        names = list(full.case_names)
        keep = len(names) - source.num_val_cases
        if keep < 2:
            raise InputError(
                f"data[{i}] '{source.path}': {len(names)} cases, {source.num_val_cases} held out "
                "for validation leaves fewer than 2 for training; lower num_val_cases"
            )
        if not source.num_val_cases:
            train.append(full)
            continue
        train.append(_open_nnunet(source, full.name, names[:keep]))
        if source.num_val_cases >= 2:
            val.append(_open_nnunet(source, f"{full.name}_val", names[keep:]))
        else:
            log.warning(
                "data[%d] '%s': num_val_cases=1 cannot form an episode (needs >= 2); no validation",
                i,
                source.path,
            )
    return train, val


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
            from medverse.registration import RegistrationCache
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

    def build(self, step: int, predictor: Predictor | None = None) -> dict:
        """This rank's windows of ``step``, collated (see :func:`collate_windows`)."""
        cfg = self.config
        num_contexts, coarse = self.plan(step)
        guided = self.is_guided(step)
        sampler = self.sampler(num_contexts, guided)
        episodes = [sampler.sample(step * cfg.batch_size + j) for j in self.offsets]
        window = cfg.window
        levels = min(
            plan_levels(e.target.shape[-3:], window, rule=cfg.level_rule).num_levels
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
                    predictor=predictor if mode == "self" and not guided else None,
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


# --------------------------------------------------------------------------------------------
# model, optimiser, schedule
# --------------------------------------------------------------------------------------------


def build_model(config: TrainConfig) -> MedverseNet:
    """The network: random init from the seed, or ``init_weights``; ``trainable`` applied."""
    net = _initial_model(config)
    if config.trainable:
        names = [name for name, _ in net.named_parameters()]
        prefixes = _prefix_of(names, config.trainable, "trainable")
        for name, param in net.named_parameters():
            param.requires_grad_(prefixes[name] is not None and param.requires_grad)
    return net


def _prefix_of(names: Sequence[str], prefixes: Sequence[str], field: str) -> dict[str, str | None]:
    """Parameter name -> the first of ``prefixes`` it starts with (or None); every prefix must
    match one of ``names`` (InputError naming ``field`` otherwise)."""
    found = {name: next((p for p in prefixes if name.startswith(p)), None) for name in names}
    unused = sorted(set(prefixes) - set(found.values()))
    if unused:
        raise InputError(f"{field}: no parameter name starts with {unused}")
    return found


def _initial_model(config: TrainConfig) -> MedverseNet:
    model_config = config.model_config
    if config.init_weights:
        from medverse.checkpoint.registry import load_model

        net = load_model(config.init_weights)
        if net.config == model_config:
            return net.train()
        grown = {
            name
            for name in _GROWABLE
            if getattr(model_config, name) and not getattr(net.config, name)
        }
        off = {f.name: f.default for f in fields(ModelConfig) if f.name in grown}
        if grown and net.config == replace(model_config, **off):
            return _grow(net, model_config).train()
        raise InputError(
            f"init_weights '{config.init_weights}' has architecture {net.config.to_dict()}, "
            f"the config asks for {model_config.to_dict()}"
        )
    torch.manual_seed(config.seed)
    return MedverseNet(model_config).train()


#: Zero-initialised additions that can be grown onto trained weights without changing their
#: function: ModelConfig field -> the parameter-name part of the module it adds.
_GROWABLE = {"input_skip": ".gate.", "prior_gate": ".prior_gate.", "guided_refiner": ".refiner."}


def _grow(net: MedverseNet, model_config: ModelConfig) -> MedverseNet:
    """``net``'s weights in ``model_config``'s architecture, which adds zero-initialised gates
    (input skip, prior gate): the same function, plus the gates' parameters to train."""
    grown = MedverseNet(model_config)
    result = grown.load_state_dict(net.state_dict(), strict=False)
    parts = tuple(_GROWABLE.values())
    assert not result.unexpected_keys
    assert all(any(part in k for part in parts) for k in result.missing_keys)
    return grown


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices decay, vectors do not; ``lr_scales`` prefixes get groups of their own
    (after the two plain groups, so ``param_groups[0]`` carries the base LR)."""
    scales = dict(config.lr_scales or {})
    params = [(n, p) for n, p in sorted(model.named_parameters()) if p.requires_grad]
    prefixes = _prefix_of([n for n, _ in params], list(scales), "lr_scales")
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in params:
        prefix = prefixes[name]
        key = (scales[prefix] if prefix else 1.0, param.ndim >= 2)
        groups.setdefault(key, []).append(param)
    order = [(1.0, True), (1.0, False)] + sorted(k for k in groups if k[0] != 1.0)
    param_groups = [
        {
            "params": groups.get(key, []),
            "lr": config.lr * key[0],
            "weight_decay": config.weight_decay if key[1] else 0.0,
        }
        for key in order
    ]
    return torch.optim.AdamW(param_groups, lr=config.lr, betas=config.betas)


def lr_factor(step: int, config: TrainConfig) -> float:
    """LR multiplier for the update number ``step`` (0-based): warm-up, then cosine or flat.

    Example:
        >>> cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.0)
        >>> lr_factor(0, cfg), lr_factor(9, cfg), lr_factor(100, cfg)
        (0.1, 1.0, 0.0)
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (
        1 + math.cos(math.pi * progress)
    )


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """bf16 autocast on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The inference rule (:func:`~medverse.inference.driver.autocast_dtype`), ``off`` = fp32."""
    from medverse.inference.driver import autocast_dtype

    return autocast_dtype("fp32" if config.amp == "off" else config.amp, device)


# --------------------------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


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
        level_rule: the driver's ``compat``.
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


# --------------------------------------------------------------------------------------------
# RNG and checkpoints
# --------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - legacy global state
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


# Fields that may change between a run and its resume without changing what it computes.
_RESUME_FREE = {
    "checkpoint_every",
    "keep_checkpoints",
    "val_every",
    "num_val_episodes",
    "val_num_contexts",
    "out_dir",
    "num_threads",
    "log_every",
    "device",
}


@dataclass
class TrainResult:
    """What :func:`run` did.

    Attributes:
        step: the last completed step.
        out_dir: the run folder.
        weights: exported weights (``out_dir/model``), or None when stopped before ``steps``.
        checkpoint: the last checkpoint written.
        last: the last step's losses.
        validation: ``(step, metrics)`` of every validation.
        seconds: wall time of this call.
        world_size: processes that trained.
        rank_difference: largest difference of the ranks' weight fingerprints at the end
            (0.0: every rank holds the same weights; always 0.0 on one process).
    """

    step: int
    out_dir: Path
    weights: Path | None = None
    checkpoint: Path | None = None
    last: dict[str, float] = field(default_factory=dict)
    validation: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0
    world_size: int = 1
    rank_difference: float = 0.0


class _Logs:
    """CSV (every step) and TensorBoard (every ``log_every`` steps), rank 0 only."""

    def __init__(self, out_dir: Path, start_step: int, enabled: bool, log_every: int):
        self.enabled = enabled
        self.log_every = log_every
        self.resumed_from = start_step or None  # written on the first row of a resumed run
        self.path = out_dir / "log.csv"
        self.writer = None
        if not enabled:
            return
        rows = []
        if start_step and self.path.is_file():  # drop steps logged after the checkpoint
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
        with open(self.path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(out_dir / "tensorboard"), purge_step=start_step or None
            )
        except ImportError as err:  # tensorboard is a declared dependency; stay usable without
            log.warning("TensorBoard disabled: %s", err)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {**row, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.resumed_from is not None:
            row["resumed_from"], self.resumed_from = self.resumed_from, None
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=CSV_COLUMNS).writerow(
                {k: _fmt(row.get(k)) for k in CSV_COLUMNS}
            )
        if self.writer is None:
            return
        step = int(row["step"])
        for key, value in row.items():
            if not isinstance(value, float | int) or isinstance(value, bool) or key == "step":
                continue
            if math.isnan(value):
                continue
            is_val = key.startswith("val_")
            if is_val or step % self.log_every == 0:
                tag = f"val/{key[4:]}" if is_val else f"train/{key}"
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _val_row(step: int, metrics: dict[str, float], baseline: float) -> dict[str, Any]:
    return {
        "step": step,
        "val_dice": metrics.get("dice", math.nan),
        "val_dice_baseline": baseline,
        "val_psnr": metrics.get("psnr", math.nan),
        "val_ssim": metrics.get("ssim", math.nan),
    }


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def run(
    config: TrainConfig,
    *,
    resume: bool | str | os.PathLike[str] = False,
    stop_at: int | None = None,
    time_limit: float | None = None,
    progress: bool = False,
    info: DistInfo | None = None,
) -> TrainResult:
    """Train (or continue training) a Medverse network.

    Args:
        config: the run.
        resume: True continues from the newest checkpoint in ``out_dir``; a path continues from
            that checkpoint. The continued run ends bit-equal to an uninterrupted one.
        stop_at: stop after this step (a checkpoint is written), as if killed there; the LR
            schedule still spans ``config.steps``.
        time_limit: seconds of wall time for this call (a time-boxed run, e.g. on a lent GPU):
            after the first step that ends past it, write a checkpoint and stop; ``--resume``
            continues. Rank 0's clock decides for every rank.
        progress: tqdm bar with ETA on rank 0.
        info: the process group (default: from the ``torchrun`` environment).

    Returns:
        :class:`TrainResult`.

    Raises:
        InputError: bad data, a checkpoint that does not match the config, ``out_dir`` already
            holding a run while ``resume`` is False, or nothing to resume.
    """
    started = time.perf_counter()
    owns_group = info is None
    info = info or init_distributed(config.device)
    threads = torch.get_num_threads()
    try:
        return _run(config, resume, stop_at, time_limit, progress, info, started)
    finally:
        torch.set_num_threads(threads)
        if owns_group and info.distributed:
            from medverse.training.distributed import cleanup

            cleanup(info)


def _run(
    config: TrainConfig,
    resume: bool | str | os.PathLike[str],
    stop_at: int | None,
    time_limit: float | None,
    progress: bool,
    info: DistInfo,
    started: float,
) -> TrainResult:
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    out_dir = Path(config.out_dir)
    device = info.device
    existing = latest_checkpoint(out_dir)
    if resume is True:
        if existing is None:
            raise InputError(
                f"--resume: no checkpoint in '{out_dir / 'checkpoints'}'; start without --resume"
            )
        checkpoint_path: Path | None = existing
    elif resume:
        checkpoint_path = Path(resume)
        if not checkpoint_path.is_file():
            raise InputError(f"checkpoint '{checkpoint_path}' not found")
    else:
        checkpoint_path = None
        if existing is not None:
            raise InputError(
                f"'{out_dir}' already holds a run (checkpoint '{existing.name}'); pass --resume "
                "to continue it or choose another out_dir"
            )
    end = config.steps if stop_at is None else min(int(stop_at), config.steps)

    random.seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002 - only for libraries drawing from the global RNG
    torch.manual_seed(config.seed)
    train_sets, val_sets = build_datasets(config.data)
    builder = StepBuilder(train_sets, config, info)
    val_episodes = validation_episodes(val_sets, config) if info.is_main else []
    baseline = context_mean_dice(val_episodes) if val_episodes else math.nan

    net = build_model(config).to(device)
    model = wrap_model(net, info)
    optimizer = _optimizer(net, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    amp_dtype = _autocast_dtype(config, device)

    start_step = 0
    if checkpoint_path is not None:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("version") != CHECKPOINT_VERSION:
            raise InputError(f"checkpoint '{checkpoint_path}' has an unknown format version")
        saved = TrainConfig.from_dict(state["config"])
        changed = sorted(
            k
            for k, v in saved.to_dict().items()
            if k not in _RESUME_FREE and config.to_dict()[k] != v
        )
        if changed and info.is_main:
            log.warning(
                "resuming '%s' with changed settings %s; the run will differ from an "
                "uninterrupted one",
                checkpoint_path,
                changed,
            )
        if saved.model_config != config.model_config:
            raise InputError(
                f"checkpoint '{checkpoint_path}' is for architecture "
                f"{saved.model_config.to_dict()}, the config asks for {config.model_config.to_dict()}"
            )
        builder.check_state(state["sampler"], f"checkpoint '{checkpoint_path}'")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_step = int(state["step"])
        if info.is_main:
            log.info("resumed from %s at step %d", checkpoint_path, start_step)

    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.yaml")
    barrier(info)
    logs = _Logs(out_dir, start_step, info.is_main, config.log_every)
    result = TrainResult(
        step=start_step, out_dir=out_dir, checkpoint=checkpoint_path, world_size=info.world_size
    )

    def predictor(
        target: torch.Tensor,
        context_in: torch.Tensor,
        context_out: torch.Tensor,
        ar_in: torch.Tensor | None,
        ar_out: torch.Tensor | None,
    ) -> torch.Tensor:
        with torch.no_grad(), _autocast(device, amp_dtype):
            out = net(
                target.to(device),
                context_in.to(device),
                context_out.to(device),
                None if ar_in is None else ar_in.to(device),
                None if ar_out is None else ar_out.to(device),
                context_batch=config.context_batch,
            )
        return out.float().cpu()

    def do_validate(step: int) -> None:
        if not val_episodes:
            return
        metrics = validate(
            net,
            val_episodes,
            level_rule=config.level_rule,
            context_batch=config.context_batch,
            autocast_dtype=amp_dtype,
        )
        result.validation.append((step, metrics))
        log.info("step %d validation: %s (context-mean Dice %.4f)", step, metrics, baseline)

    if start_step == 0 and config.val_every and info.is_main and val_episodes:
        do_validate(0)
        logs.write(_val_row(0, result.validation[-1][1], baseline))
    barrier(info)

    bar = None
    if progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    try:
        for step in range(start_step, end):
            tick = time.perf_counter()
            batch = builder.build(step, predictor if config.ar_source != "degraded" else None)
            lr = optimizer.param_groups[0]["lr"]
            metrics = train_step(
                model,
                optimizer,
                batch,
                grad_clip=config.grad_clip,
                context_batch=config.context_batch,
                autocast_dtype=amp_dtype,
                loss_beta=config.loss_beta,
                gradient_weight=config.gradient_weight,
                foreground_weight=config.foreground_weight,
                dice_weight=config.dice_weight,
                info=info,
            )
            scheduler.step()
            done = step + 1
            result.step, result.last = done, metrics
            row: dict[str, Any] = {
                "step": done,
                "lr": lr,
                **metrics,
                "num_contexts": int(batch["context_in"].shape[1]),
                "pass": batch["pass"],
                "families": "+".join(batch["family"]),
                "seconds": time.perf_counter() - tick,
            }
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(
                    f"step {done}: loss is {metrics['loss']} (tasks {batch['tasks']}); lower lr "
                    "or enable grad_clip"
                )
            out_of_time = (
                time_limit is not None
                and done < end
                and bool(broadcast_object(time.perf_counter() - started > time_limit, info))
            )
            if done % config.checkpoint_every == 0 or done == end or out_of_time:
                result.checkpoint = _save_checkpoint(
                    out_dir, done, net, optimizer, scheduler, builder, config, info
                )
            periodic = bool(config.val_every) and done % config.val_every == 0
            if val_episodes and (periodic or done == config.steps):  # val_episodes: rank 0 only
                do_validate(done)
                row.update(_val_row(done, result.validation[-1][1], baseline))
            logs.write(row)
            if bar is not None:
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", L=row["num_contexts"], refresh=False)
                bar.update(1)
            if out_of_time:
                log.warning(
                    "time limit of %.0f s reached after step %d; stopping", time_limit, done
                )
                break
    finally:
        if bar is not None:
            bar.close()
    if result.step == config.steps:
        result.rank_difference = _rank_difference(net, info)
        if result.rank_difference > 0:
            raise RuntimeError(
                f"after {result.step} steps the {info.world_size} ranks hold different weights "
                f"(fingerprint difference {result.rank_difference:.3g}); DDP lost synchronisation"
            )
        if info.is_main:
            result.weights = _export(out_dir, net, config, result)
        barrier(info)
    logs.close()
    result.seconds = time.perf_counter() - started
    return result


def _rank_difference(net: nn.Module, info: DistInfo) -> float:
    """Largest difference between ranks of a per-tensor weight fingerprint (0.0 alone)."""
    if not info.distributed:
        return 0.0
    parts = []
    for value in net.state_dict().values():
        v = value.detach().double().flatten()
        parts.append(torch.stack([v.sum(), (v * v).sum(), v[:: max(1, v.numel() // 97)].sum()]))
    fingerprint = torch.cat(parts).to(info.device)
    gathered = [torch.empty_like(fingerprint) for _ in range(info.world_size)]
    torch.distributed.all_gather(gathered, fingerprint)
    return float(max((g - gathered[0]).abs().max() for g in gathered))


def _save_checkpoint(
    out_dir: Path,
    step: int,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    builder: StepBuilder,
    config: TrainConfig,
    info: DistInfo,
) -> Path:
    folder = out_dir / "checkpoints"
    path = folder / f"step_{step:07d}.pt"
    if info.is_main:
        state = {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "sampler": {**builder.state_dict(), "next_step": step},
            "config": config.to_dict(),
        }
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            torch.save(state, temporary)
        atomic_write_text(folder / "latest.txt", path.name + "\n")
        old = sorted(folder.glob("step_*.pt"))[: -config.keep_checkpoints]
        for stale in old:
            stale.unlink(missing_ok=True)
        log.info("checkpoint %s", path)
    barrier(info)
    return path


def _export(out_dir: Path, net: nn.Module, config: TrainConfig, result: TrainResult) -> Path:
    from medverse.checkpoint.io import save_model

    model_config: ModelConfig = config.model_config
    validation = result.validation[-1][1] if result.validation else {}
    extra = {
        "training": {
            "steps": result.step,
            "seed": config.seed,
            "world_size": result.world_size,
            "rank_fingerprint_difference": result.rank_difference,
            "data": [s.to_dict() for s in config.data],
            "validation": {k: v for k, v in validation.items() if not math.isnan(v)},
        }
    }
    name = Path(config.out_dir).name
    dest = save_model(
        out_dir / "model",
        net.state_dict(),
        model_config,
        source=f"medverse.training run '{name}' ({result.step} steps, seed {config.seed})",
        extra=extra,
    )
    log.info("exported weights to %s", dest)
    return dest
