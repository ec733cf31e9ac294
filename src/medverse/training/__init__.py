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

from medverse import lazy_getattr

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

_LAZY = {
    "TrainingWindow": "medverse.training.coarse_to_fine",
    "collate_windows": "medverse.training.coarse_to_fine",
    "episode_to_window": "medverse.training.coarse_to_fine",
    "DataSource": "medverse.training.config",
    "TrainConfig": "medverse.training.config",
    "DistInfo": "medverse.training.distributed",
    "init_distributed": "medverse.training.distributed",
    "TrainResult": "medverse.training.loop",
    "run": "medverse.training.loop",
    "context_mean_dice": "medverse.training.scoring",
    "validate": "medverse.training.scoring",
    "StepBuilder": "medverse.training.steps",
    "train_step": "medverse.training.steps",
    "validation_episodes": "medverse.training.steps",
    "episode_loss": "medverse.training.losses",
    "image_smooth_l1": "medverse.training.losses",
    "mask_smooth_l1": "medverse.training.losses",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
