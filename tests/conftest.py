"""Shared fixtures: a tiny model configuration, seeded RNGs, the vendored golden reference, a
recorder in place of the training run."""

from __future__ import annotations

import io
import lzma
import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medverse.model.config import ModelConfig

# The released code's outputs on fixed weights and inputs, vendored (see tests/golden/README.md).
GOLDEN = Path(__file__).parent / "golden"
GOLDEN_WEIGHTS = GOLDEN / "weights_seed0_c4-8-16-32-64_gain2.safetensors"
MANIFEST = GOLDEN / "medverse_official_state_dict.json"


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


def golden_arrays(name: str) -> dict[str, np.ndarray]:
    """A vendored golden file (``forward_128_inputs``...): an xz-compressed ``.npz``."""
    data = lzma.decompress((GOLDEN / f"{name}.npz.xz").read_bytes())
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return dict(npz)


def golden_max_diff(actual: np.ndarray, expected: dict[str, np.ndarray], key: str) -> float:
    """max |actual - reference| over the stored voxels of the reference array ``key``.

    ``expected`` is ``golden_arrays("..._expected")``: each array is stored as a fixed random
    subset of its voxels (``KEY.index`` flat indices, ``KEY.value``) with its full ``KEY.shape``.
    """
    shape = tuple(int(n) for n in expected[f"{key}.shape"])
    actual = np.asarray(actual, dtype=np.float32)
    assert actual.shape == shape, (key, actual.shape, shape)
    values = actual.reshape(-1)[expected[f"{key}.index"].astype(np.int64)]
    return float(np.abs(values - expected[f"{key}.value"]).max())


#: A training config small enough to read and write in milliseconds (never run).
TINY_TRAIN = {"model": {"channels": [4, 8, 16], "window": 16}, "steps": 10, "out_dir": "runs/tiny"}


@pytest.fixture
def training_runs(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The training run that both command lines call (``training/command.py``) replaced:
    ``calls`` gets each call's config and keywords; it returns the result queued in
    ``results`` if any, else a finished run of 1.25 s with weights ``w/model``."""
    import medverse.training.command as command
    from medverse.training.loop import TrainResult

    runs = SimpleNamespace(calls=[], results=[])

    def fake_run(config, **kwargs):  # noqa: ANN001, ANN003, ANN202
        runs.calls.append({"config": config, **kwargs})
        if runs.results:
            return runs.results.pop()
        return TrainResult(
            step=config.steps, out_dir=Path(config.out_dir), weights=Path("w/model"), seconds=1.25
        )

    monkeypatch.setattr(command, "run", fake_run)
    return runs
