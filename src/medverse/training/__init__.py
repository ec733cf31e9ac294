"""Training Medverse networks on in-context episodes (METHOD.md §4).

``python -m medverse.training --config run.yaml [--resume]`` or, on several processes,
``torchrun --nproc_per_node 2 -m medverse.training --config run.yaml``; from the command line
``medverse train --config run.yaml``. From Python:

Example:
    >>> from medverse.training import TrainConfig, run
    >>> config = TrainConfig.from_file("configs/train_small_synthetic.yaml")  # doctest: +SKIP
    >>> result = run(config, progress=True)  # doctest: +SKIP
    >>> result.weights  # load with medverse.load_model(result.weights)  # doctest: +SKIP
"""

from __future__ import annotations

from medverse.training.coarse_to_fine import TrainingWindow, collate_windows, episode_to_window
from medverse.training.config import DataSource, TrainConfig
from medverse.training.distributed import DistInfo, init_distributed
from medverse.training.loop import (
    StepBuilder,
    TrainResult,
    context_mean_dice,
    run,
    train_step,
    validate,
    validation_episodes,
)
from medverse.training.losses import episode_loss, image_smooth_l1, mask_smooth_l1

__all__ = [
    "DataSource",
    "DistInfo",
    "StepBuilder",
    "TrainConfig",
    "TrainResult",
    "TrainingWindow",
    "collate_windows",
    "context_mean_dice",
    "episode_loss",
    "episode_to_window",
    "image_smooth_l1",
    "init_distributed",
    "mask_smooth_l1",
    "run",
    "train_step",
    "validate",
    "validation_episodes",
]
