"""Training checkpoints (``training/checkpoints.py``): finding the newest, choosing what a run
resumes from, and a save/load round trip of the run's state. A whole run stopped and resumed:
``test_resume.py``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from medverse.errors import InputError
from medverse.training.checkpoints import (
    CHECKPOINT_VERSION,
    _load_checkpoint,
    _resume_path,
    _save_checkpoint,
    latest_checkpoint,
)
from medverse.training.config import TrainConfig
from medverse.training.distributed import DistInfo
from medverse.training.model_setup import _optimizer, build_model
from medverse.training.steps import StepBuilder

from .conftest import TINY_MODEL


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_latest_checkpoint_follows_the_pointer_else_the_highest_step(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None  # no checkpoints folder
    folder = tmp_path / "checkpoints"
    _touch(folder, "step_0000002.pt", "step_0000010.pt", "step_0000009.pt")
    assert latest_checkpoint(tmp_path) == folder / "step_0000010.pt"
    (folder / "latest.txt").write_text("step_0000009.pt\n")
    assert latest_checkpoint(str(tmp_path)) == folder / "step_0000009.pt"
    (folder / "latest.txt").write_text("step_0000042.pt\n")  # a pointer to a file that is gone
    assert latest_checkpoint(tmp_path) == folder / "step_0000010.pt"


def test_resume_path_refuses_what_would_lose_or_invent_a_run(tmp_path: Path) -> None:
    empty, run = tmp_path / "empty", tmp_path / "run"
    assert _resume_path(empty, False) is None  # a fresh run into an empty folder
    with pytest.raises(InputError, match="--resume: no checkpoint in .*start without --resume"):
        _resume_path(empty, True)
    _touch(run / "checkpoints", "step_0000004.pt")
    assert _resume_path(run, True) == run / "checkpoints" / "step_0000004.pt"
    with pytest.raises(InputError, match="already holds a run .*'step_0000004.pt'.*--resume"):
        _resume_path(run, False)
    chosen = run / "checkpoints" / "step_0000004.pt"
    assert _resume_path(empty, str(chosen)) == chosen  # an explicit file, wherever it is
    with pytest.raises(InputError, match="checkpoint '.*missing.pt' not found"):
        _resume_path(run, tmp_path / "missing.pt")


def _state(config: TrainConfig):
    torch.manual_seed(0)
    net = build_model(config)
    optimizer = _optimizer(net, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    return net, optimizer, scheduler, StepBuilder([], config)


def test_a_checkpoint_restores_weights_optimiser_schedule_step_and_random_streams(
    make_config,
) -> None:
    config = make_config(keep_checkpoints=1)
    out = Path(config.out_dir)
    net, optimizer, scheduler, builder = _state(config)
    for param in net.parameters():
        param.grad = torch.full_like(param, 0.1)  # any gradient: the step fills Adam's moments
    optimizer.step()
    scheduler.step()
    _save_checkpoint(out, 6, net, optimizer, scheduler, builder, config, DistInfo())
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002 - the legacy global stream is part of the saved state
    torch.manual_seed(1)
    path = _save_checkpoint(out, 7, net, optimizer, scheduler, builder, config, DistInfo())
    assert path == out / "checkpoints" / "step_0000007.pt"
    assert sorted(p.name for p in path.parent.glob("step_*.pt")) == [path.name]  # keep 1
    assert latest_checkpoint(out) == path
    expected = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    moments = {
        (index, key): value.clone()
        for index, state in optimizer.state_dict()["state"].items()
        for key, value in state.items()
    }
    assert moments

    fresh, fresh_optimizer, fresh_scheduler, fresh_builder = _state(config)
    assert not all(torch.equal(v, fresh.state_dict()[k]) for k, v in weights.items())
    torch.manual_seed(99)
    step = _load_checkpoint(
        path, config, fresh, fresh_optimizer, fresh_scheduler, fresh_builder, DistInfo()
    )
    assert step == 7
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in weights.items())
    for (index, key), value in moments.items():
        assert torch.equal(fresh_optimizer.state_dict()["state"][index][key], value), (index, key)
    assert (
        fresh_scheduler.last_epoch == 1 and fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    )
    restored = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    assert restored[:2] == expected[:2] and torch.equal(restored[2], expected[2])


def test_a_checkpoint_of_another_format_architecture_or_seed_is_refused(make_config) -> None:
    config = make_config()
    out = Path(config.out_dir)
    net, optimizer, scheduler, builder = _state(config)
    path = _save_checkpoint(out, 2, net, optimizer, scheduler, builder, config, DistInfo())

    def load(config: TrainConfig, file: Path = path) -> int:
        return _load_checkpoint(file, config, *_state(config), DistInfo())

    wider = config.replace(model={**TINY_MODEL, "channels": [4, 8, 32]})
    with pytest.raises(InputError, match="is for architecture .*the config asks for"):
        load(wider)
    with pytest.raises(InputError, match="drawn with seed 3, the config says 4"):
        load(config.replace(seed=4))
    state = torch.load(path, weights_only=True)
    state["version"] = CHECKPOINT_VERSION + 1
    other = path.with_name("other.pt")
    torch.save(state, other)
    with pytest.raises(InputError, match="'.*other.pt' has an unknown format version"):
        load(config, other)
