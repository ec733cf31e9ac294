"""What both training command lines do: ``medverse train`` and ``python -m medverse.training``.

The Typer command (``medverse.cli.train``) and the ``torchrun`` entry point
(``medverse/training/__main__.py``) parse their options their own way, then hand them here, so a
bad ``--stop-at``, ``--time-limit`` or override gets the same message from both, and both print
the same summary.

Example:
    >>> config, result = run_from_options("configs/train_small_synthetic.yaml",
    ...                                   time_limit=30)  # doctest: +SKIP
    >>> print("\\n".join(summary_lines(config, result)))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from medverse.errors import InputError
from medverse.training.config import TrainConfig
from medverse.training.distributed import DistInfo
from medverse.training.loop import TrainResult, run

__all__ = ["CONFIG_SUFFIXES", "run_from_options", "summary_lines"]

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def run_from_options(
    config: str | os.PathLike[str],
    *,
    resume: bool = False,
    steps: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    stop_at: int | None = None,
    time_limit: float | None = None,
    progress: bool = True,
    info: DistInfo | None = None,
) -> tuple[TrainConfig, TrainResult]:
    """Read ``config``, apply the command line's overrides, check its limits and run.

    Args:
        config: the TrainConfig file (.yaml, .yml or .json).
        resume: continue from the newest checkpoint in the run's ``out_dir``.
        steps, out_dir: override the config's fields.
        stop_at: stop (with a checkpoint) after this step.
        time_limit: minutes of wall time, then checkpoint and stop.
        progress: the progress bar.
        info: the process group (default: from the ``torchrun`` environment).

    Returns:
        The config that ran and the run's :class:`TrainResult`.

    Raises:
        InputError: a bad file or override (named as typed: ``--stop-at``, ``--time-limit``),
            or anything :func:`medverse.training.loop.run` refuses.
    """
    path = Path(config)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise InputError(
            f"training config '{path}': expected a .yaml, .yml or .json file, got '{path.suffix}'"
        )
    if stop_at is not None and stop_at < 1:  # else: a run folder, exit 0 and no checkpoint
        raise InputError(f"--stop-at must be a step >= 1, got {stop_at}")
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise InputError(f"--time-limit must be a positive number of minutes, got {time_limit}")
    train_config = TrainConfig.from_file(path)
    changes: dict[str, object] = {}
    if steps is not None:
        changes["steps"] = steps
    if out_dir is not None:
        changes["out_dir"] = str(out_dir)
    if changes:
        try:
            train_config = train_config.replace(**changes)
        except InputError as err:
            raise InputError(
                f"training config '{path}' with command-line overrides: {err}"
            ) from None
    result = run(
        train_config,
        resume=resume,
        stop_at=stop_at,
        time_limit=None if time_limit is None else 60.0 * time_limit,
        progress=progress,
        info=info,
    )
    return train_config, result


def summary_lines(config: TrainConfig, result: TrainResult) -> list[str]:
    """What a command line prints after a run: where its weights or checkpoint are."""
    if result.weights is not None:
        lines = [
            f"trained {result.step} steps in {result.seconds:.1f} s; weights: {result.weights}"
        ]
    else:
        lines = [
            f"stopped at step {result.step}/{config.steps}; checkpoint: {result.checkpoint} "
            "(continue with --resume)"
        ]
    if result.validation:
        step, metrics = result.validation[-1]
        shown = ", ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if k in ("dice", "psnr", "ssim")
        )
        lines.append(f"validation at step {step}: {shown}")
    return lines
