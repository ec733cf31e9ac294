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
    from medverse.training.command import run_from_options, summary_lines

    train_config, result = run_from_options(
        config,
        resume=resume,
        steps=steps,
        out_dir=out_dir,
        stop_at=stop_at,
        time_limit=time_limit,
        progress=progress,
    )
    for line in summary_lines(train_config, result):
        typer.echo(line)
