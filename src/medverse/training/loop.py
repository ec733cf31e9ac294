"""The training run: episodes -> coarse-to-fine windows -> AdamW steps, checkpoints, validation.

:func:`run` puts the parts of the training room together: the datasets of the data sources
(:mod:`medverse.training.sources`), the steps (:class:`~medverse.training.steps.StepBuilder`,
:func:`~medverse.training.steps.train_step`), the network, AdamW with warm-up + cosine decay
(:mod:`medverse.training.model_setup`), gradient clipping (0.25 by default, METHOD.md §4), bf16
autocast on CUDA, atomic checkpoints and exact resume (:mod:`medverse.training.checkpoints`),
validation (:mod:`medverse.training.scoring`), a CSV log and TensorBoard scalars (rank 0), a tqdm
bar with ETA (rank 0) and, at the end, the weights exported with
:func:`~medverse.checkpoint.io.save_model`.

The names that lived here before the split (``StepBuilder``, ``train_step``,
``build_datasets``, ``build_model``, ``lr_factor``, ``validate``, ``context_mean_dice``,
``validation_episodes``, ``latest_checkpoint``) are re-exported for one release; import them
from their modules or from :mod:`medverse.training`.

Example:
    >>> from medverse.training import TrainConfig, run
    >>> cfg = TrainConfig(model={"channels": [4, 8, 16], "window": 16}, steps=2,
    ...                   data=[{"shape": [24, 24, 24], "num_subjects": 4}], out_dir="/tmp/r")
    >>> result = run(cfg)  # doctest: +SKIP
    >>> result.weights  # doctest: +SKIP
    PosixPath('/tmp/r/model')
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medverse.errors import InputError
from medverse.model.config import ModelConfig
from medverse.training.checkpoints import (
    CHECKPOINT_VERSION,
    _load_checkpoint,
    _resume_path,
    _save_checkpoint,
    latest_checkpoint,
)
from medverse.training.config import TrainConfig
from medverse.training.distributed import (
    DistInfo,
    barrier,
    broadcast_object,
    init_distributed,
    wrap_model,
)
from medverse.training.model_setup import _optimizer, build_model, lr_factor
from medverse.training.scoring import context_mean_dice, validate
from medverse.training.sources import build_datasets
from medverse.training.steps import (
    StepBuilder,
    _autocast,
    _autocast_dtype,
    train_step,
    validation_episodes,
)

__all__ = [
    "CHECKPOINT_VERSION",
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


# --------------------------------------------------------------------------------------------
# logs and results
# --------------------------------------------------------------------------------------------


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
        InputError: bad data, a checkpoint that does not match the config, an ``out_dir``
            already holding a run while ``resume`` is False or one that cannot be created,
            nothing to resume, ``stop_at`` below 1, or a ``time_limit`` that is not a positive
            number.
    """
    if stop_at is not None and not stop_at >= 1:
        raise InputError(f"stop_at must be a step >= 1, got {stop_at}")
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise InputError(f"time_limit must be a positive number of seconds, got {time_limit}")
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


def _check_out_dir(out_dir: Path) -> None:
    """Raise if ``out_dir`` cannot be made: its nearest existing ancestor is a file or not
    writable. Nothing is created here, so a run that fails on its data leaves no folder."""
    ancestor = out_dir
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    problem = None
    if not ancestor.is_dir():
        problem = f"'{ancestor}' is not a folder"
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        problem = f"'{ancestor}' is not writable"
    if problem is not None:
        raise InputError(f"out_dir '{out_dir}': cannot create the run folder ({problem})")


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
    checkpoint_path = _resume_path(out_dir, resume)
    if info.is_main:  # before the data and the model are built: a bad folder fails at once
        _check_out_dir(out_dir)
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
        start_step = _load_checkpoint(
            checkpoint_path, config, net, optimizer, scheduler, builder, info
        )

    if info.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                f"out_dir '{out_dir}': cannot create the run folder ({err.strerror or err})"
            ) from None
        config.save(out_dir / "config.yaml")
    barrier(info)
    logs = _Logs(out_dir, start_step, info.is_main, config.log_every)
    result = TrainResult(
        step=start_step, out_dir=out_dir, checkpoint=checkpoint_path, world_size=info.world_size
    )

    def window_model(
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
            batch = builder.build(step, window_model if config.ar_source != "degraded" else None)
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
