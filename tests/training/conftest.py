"""Fixtures for tests/training: tiny configurations that train in seconds on 2 CPU cores.

A tiny network (channels (4, 8, 16), window 16) on synthetic 24^3 volumes: two levels (a level-1
pass at 12^3 padded to 16^3, and 16^3 windows of the 24^3 volume), so both kinds of training
step occur. ``num_threads: 1``: on a shared 2-core machine one thread per process is several
times faster than two for these small convolutions.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medverse.data.episodes import Episode
from medverse.training.config import TrainConfig

TINY_MODEL = {"channels": [4, 8, 16], "window": 16}


def tiny_config(out_dir: Path | str, **changes: Any) -> TrainConfig:
    """A TrainConfig that runs a step in well under a second."""
    data = changes.pop(
        "data",
        [{"kind": "synthetic", "shape": [24, 24, 24], "num_subjects": 5, "num_val_cases": 2}],
    )
    fields: dict[str, Any] = {
        "model": TINY_MODEL,
        "data": data,
        "batch_size": 2,
        "num_contexts": [1, 3],
        "steps": 4,
        "warmup_steps": 1,
        "lr": 1e-3,
        "checkpoint_every": 2,
        "val_every": 0,
        "num_val_episodes": 2,
        "num_threads": 1,
        "out_dir": str(out_dir),
        "seed": 3,
    }
    fields.update(changes)
    return TrainConfig.from_dict(fields)


def fake_episode(shape=(24, 24, 24), num_contexts=2, family="segmentation", seed=0) -> Episode:
    """A full-grid episode of uniform noise; masks are noise > 0.6, images the noise inverted."""
    rng = np.random.default_rng(seed)
    image = rng.random((num_contexts + 1, 1, *shape)).astype(np.float32)
    if family == "segmentation":
        output = (image > 0.6).astype(np.float32)
    else:
        output = 1 - image
    return Episode(
        target=image[0],
        target_reference=output[0],
        context_in=image[1:],
        context_out=output[1:],
        task=family,
        family=family,
        seed=seed,
    )


def torchrun() -> list[str]:
    """The torchrun command of this Python (``python -m torch.distributed.run`` without the script)."""
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture
def make_config(tmp_path: Path):
    """``make_config(name, **changes)`` -> a tiny TrainConfig writing to ``tmp_path / name``."""

    def factory(name: str = "run", **changes: Any) -> TrainConfig:
        return tiny_config(tmp_path / name, **changes)

    return factory


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread for the tests of this folder (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
