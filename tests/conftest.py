"""Shared fixtures: a tiny model configuration, seeded RNGs, the reference folder."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from medverse.model.config import ModelConfig

REFERENCE = Path(
    os.environ.get("MEDVERSE_REFERENCE", Path(__file__).parents[2] / "shared" / "reference")
)
GOLDEN = REFERENCE / "golden"
GOLDEN_WEIGHTS = GOLDEN / "weights_seed0_c4-8-16-32-64_gain2.safetensors"


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - libraries may still draw from the legacy global RNG
    torch.manual_seed(0)


@pytest.fixture
def tiny_config() -> ModelConfig:
    """Three stages, window 16: a forward takes milliseconds."""
    return ModelConfig(channels=(4, 8, 16), window=16)


def needs_reference() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not GOLDEN.is_dir(), reason=f"reference data not found at {REFERENCE}"
    )
