"""``medverse train``: run or resume a training run from a YAML/JSON config.

The command body is :func:`train`; ``medverse.cli.main`` registers it. Heavy imports (torch, the
data stack) happen inside it so that ``medverse --help`` stays fast. For several processes use
``torchrun --nproc_per_node N -m medverse.training --config FILE`` (same options).
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["train"]


def train(
    config: Path = typer.Option(
        ..., "--config", "-c", help="TrainConfig file (.yaml/.yml or .json)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest checkpoint in the run's out_dir."
    ),
    steps: int = typer.Option(None, "--steps", help="Override the config's total steps."),
    out_dir: Path = typer.Option(None, "--out-dir", help="Override the config's out_dir."),
    stop_at: int = typer.Option(
        None, "--stop-at", help="Stop (with a checkpoint) after this step; resume later."
    ),
    time_limit: float = typer.Option(
        None,
        "--time-limit",
        help="Minutes of wall time (a time-boxed run): then checkpoint and stop; resume later.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with ETA."),
) -> None:
    """Train a Medverse network on in-context episodes (synthetic or nnU-Net datasets).

    \b
    Example:
      medverse train --config configs/train_small_synthetic.yaml --time-limit 60
    """
    from medverse.errors import InputError
    from medverse.training.config import TrainConfig
    from medverse.training.loop import run

    if config.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise InputError(
            f"training config '{config}': expected a .yaml, .yml or .json file, got '{config.suffix}'"
        )
    train_config = TrainConfig.from_file(config)
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
                f"training config '{config}' with command-line overrides: {err}"
            ) from None
    if stop_at is not None and stop_at < 1:  # before: a run folder, exit 0 and no checkpoint
        raise InputError(f"--stop-at must be a step >= 1, got {stop_at}")
    if time_limit is not None and not time_limit > 0:
        raise InputError(f"--time-limit must be a positive number of minutes, got {time_limit}")
    result = run(
        train_config,
        resume=resume,
        stop_at=stop_at,
        time_limit=None if time_limit is None else 60.0 * time_limit,
        progress=progress,
    )
    if result.weights is not None:
        typer.echo(
            f"trained {result.step} steps in {result.seconds:.1f} s; weights: {result.weights}"
        )
    else:
        typer.echo(
            f"stopped at step {result.step}/{train_config.steps}; checkpoint: {result.checkpoint} "
            "(continue with --resume)"
        )
    if result.validation:
        step, metrics = result.validation[-1]
        shown = ", ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if k in ("dice", "psnr", "ssim")
        )
        typer.echo(f"validation at step {step}: {shown}")
