"""Training checkpoints: write, find and resume from ``out_dir/checkpoints/step_*.pt``.

A checkpoint holds the model, optimiser, scheduler, step, Python/numpy/torch RNG states, the
sampler state and the config; it is written atomically on rank 0, and a resumed run ends
bit-equal to an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medverse.errors import InputError
from medverse.files import atomic_path, atomic_write_text
from medverse.training.config import TrainConfig
from medverse.training.distributed import DistInfo, barrier
from medverse.training.steps import StepBuilder

__all__ = ["CHECKPOINT_VERSION", "latest_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


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


def _resume_path(out_dir: Path, resume: bool | str | os.PathLike[str]) -> Path | None:
    """The checkpoint a run continues from (None: a fresh run); refuses a fresh run into a
    folder that already holds one, and a resume with nothing to resume."""
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
    return checkpoint_path


def _load_checkpoint(
    checkpoint_path: Path,
    config: TrainConfig,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    builder: StepBuilder,
    info: DistInfo,
) -> int:
    """Restore a run's state (model, optimiser, scheduler, RNGs) from a checkpoint; its step."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"checkpoint '{checkpoint_path}' has an unknown format version")
    saved = TrainConfig.from_dict(state["config"])
    changed = sorted(
        k for k, v in saved.to_dict().items() if k not in _RESUME_FREE and config.to_dict()[k] != v
    )
    if changed and info.is_main:
        log.warning(
            "resuming '%s' with changed settings %s; the run will differ from an uninterrupted one",
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
    return start_step


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
