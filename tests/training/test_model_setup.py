"""The network and optimiser of a run (``training/model_setup.py``): build or grow the model,
``trainable``, AdamW groups, the LR schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medverse.errors import InputError
from medverse.training.config import TrainConfig
from medverse.training.model_setup import _optimizer, build_model, lr_factor
from medverse.training.sources import build_datasets
from medverse.training.steps import StepBuilder, train_step

from .conftest import TINY_MODEL


def test_lr_schedule_warmup_then_cosine() -> None:
    config = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(4, config) == pytest.approx(0.5)
    assert lr_factor(10, config) == pytest.approx(1.0)
    assert lr_factor(60, config) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos = 0
    assert lr_factor(110, config) == pytest.approx(0.1)
    flat = config.replace(schedule="constant")
    assert lr_factor(100, flat) == 1.0


def test_init_weights_grow_an_input_skip_and_nothing_else(make_config, tmp_path: Path) -> None:
    from medverse.checkpoint.io import save_model
    from medverse.model.config import ModelConfig
    from medverse.model.network import MedverseNet

    torch.manual_seed(1)
    plain = MedverseNet(ModelConfig(channels=(4, 8, 16), window=16))
    path = tmp_path / "plain.safetensors"
    save_model(path, plain.state_dict(), plain.config, source="test")
    grown = build_model(
        make_config(init_weights=str(path), model={**TINY_MODEL, "input_skip": True})
    )
    assert grown.config.input_skip and grown.target_decoder.output_block.gate is not None
    for key, value in plain.state_dict().items():
        assert torch.equal(grown.state_dict()[key], value)
    with pytest.raises(InputError, match="architecture"):
        build_model(
            make_config(init_weights=str(path), model={"channels": [4, 8, 32], "window": 16})
        )


def test_lr_scales_give_named_parameters_their_own_rate(make_config) -> None:
    config = make_config(
        model={**TINY_MODEL, "input_skip": True}, lr_scales={"target_decoder.output_block.gate": 50}
    )
    net = build_model(config)
    optimizer = _optimizer(net, config)
    gate = {id(p) for p in net.target_decoder.output_block.gate.parameters()}
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert all(rates[i] == pytest.approx(5e-2) for i in gate)
    assert sum(r == pytest.approx(1e-3) for r in rates.values()) == len(rates) - 2
    with pytest.raises(InputError, match="no parameter name starts with"):
        _optimizer(net, make_config(lr_scales={"decoder.nothing": 2}))
    for bad in ({"x": 0}, {"x": "fast"}, [1, 2], {}):
        with pytest.raises(InputError, match="lr_scales"):
            make_config(lr_scales=bad)


def test_trainable_freezes_everything_else(make_config) -> None:
    config = make_config(trainable=["target_decoder.output_block"])
    net = build_model(config)
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("target_decoder.output_block") for n in trained)
    train_sets, _ = build_datasets(config.data)
    batch = StepBuilder(train_sets, config).build(0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    train_step(net, optimizer, batch)
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("target_decoder.output_block") for k in changed)
    with pytest.raises(InputError, match="no parameter name starts with"):
        build_model(make_config(trainable=["nothing.here"]))
    for bad in ("target_decoder", [], [""]):
        with pytest.raises(InputError, match="trainable"):
            make_config(trainable=bad)


def test_build_model_starts_from_the_seed_in_training_mode(make_config) -> None:
    first, again = build_model(make_config(seed=5)), build_model(make_config(seed=5))
    other = build_model(make_config(seed=6))
    assert first.training and first.config == make_config().model_config
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in first.state_dict().items())


def test_matrices_decay_and_vectors_do_not(make_config) -> None:
    config = make_config(weight_decay=0.05)
    net = build_model(config)
    plain, vectors = _optimizer(net, config).param_groups[:2]
    assert (plain["weight_decay"], vectors["weight_decay"]) == (0.05, 0.0)
    assert plain["lr"] == vectors["lr"] == config.lr
    assert plain["params"] and all(p.ndim >= 2 for p in plain["params"])
    assert vectors["params"] and all(p.ndim < 2 for p in vectors["params"])
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(plain["params"]) + len(vectors["params"]) == len(trainable)
