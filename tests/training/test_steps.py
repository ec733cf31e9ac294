"""The steps of a run (``training/steps.py``): which episodes and windows a step draws, one
optimiser step, and the fixed validation episodes. The windows themselves:
``test_coarse_to_fine.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medverse.errors import InputError
from medverse.training import steps
from medverse.training.distributed import DistInfo
from medverse.training.model_setup import build_model
from medverse.training.sources import build_datasets
from medverse.training.steps import StepBuilder, train_step, validation_episodes

from .conftest import TINY_MODEL

# -- step building -------------------------------------------------------------------------------


def test_steps_are_pure_and_shards_add_up(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(batch_size=4, num_contexts=[2, 3])
    train_sets, _ = build_datasets(config.data)
    whole = StepBuilder(train_sets, config).build(5)
    again = StepBuilder(train_sets, config).build(5)
    for key in ("target", "reference", "context_in", "context_out"):
        assert torch.equal(whole[key], again[key])
    # two ranks of two: their halves concatenate to the single-process batch
    monkeypatch.setattr(steps, "all_reduce_min", lambda value, info: value)
    halves = [
        StepBuilder(train_sets, config, DistInfo(rank=r, world_size=2)).build(5) for r in (0, 1)
    ]
    for key in ("target", "reference", "context_in", "context_out"):
        assert torch.equal(torch.cat([h[key] for h in halves]), whole[key])
    assert halves[0]["family"] + halves[1]["family"] == whole["family"]
    with pytest.raises(InputError, match="multiple of the number of processes"):
        StepBuilder(train_sets, config, DistInfo(rank=0, world_size=3))


def test_guided_steps_train_segmentation_with_registered_contexts(make_config) -> None:
    config = make_config(guided_prob=1.0, model={**TINY_MODEL, "prior_gate": True})
    train_sets, _ = build_datasets(config.data)
    builder = StepBuilder(train_sets, config)
    batch = builder.build(0)
    assert batch["pass"] == "guided" and batch["guided"] is True
    assert set(batch["family"]) == {"segmentation"}
    # the prior is the mean of the (soft) context masks, and the AR image is the target
    assert torch.allclose(batch["ar_out"][:, 0], batch["context_out"].mean(dim=1), atol=1e-6)
    assert torch.equal(batch["ar_in"][:, 0], batch["target"])
    # a guided step at a zero gate starts exactly at the prior, and the step moves the gate
    torch.manual_seed(0)
    net = build_model(config)
    gate = net.target_decoder.output_block.prior_gate
    with torch.no_grad():
        start = net(
            batch["target"],
            batch["context_in"],
            batch["context_out"],
            batch["ar_in"],
            batch["ar_out"],
            guided=True,
        )
    assert torch.equal(start, batch["ar_out"][:, 0])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    train_step(net, optimizer, batch, grad_clip=0.0)
    assert gate.weight.abs().sum() > 0
    assert not StepBuilder(train_sets, make_config(guided_prob=0.0)).is_guided(0)
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match="guided_prob"):
            make_config(guided_prob=bad)
    with pytest.raises(InputError, match="residual_voxels"):
        make_config(residual_voxels=[2.0, 1.0])


def test_train_step_learns_a_fixed_batch(make_config) -> None:
    config = make_config()
    torch.manual_seed(0)
    net = build_model(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    train_sets, _ = build_datasets(config.data)
    batch = StepBuilder(train_sets, config).build(0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    losses = [train_step(net, optimizer, batch, grad_clip=0.25)["loss"] for _ in range(6)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert "target_decoder.output_block.head.weight" in changed or len(changed) > 10


def test_grad_clip_reports_the_norm_before_clipping(make_config) -> None:
    config = make_config()
    net = build_model(config)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    train_sets, _ = build_datasets(config.data)
    batch = StepBuilder(train_sets, config).build(1)
    out = train_step(net, optimizer, batch, grad_clip=1e-3)
    norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in net.parameters() if p.grad is not None])
    )
    assert out["grad_norm"] > 1e-3
    assert norm.item() == pytest.approx(1e-3, rel=1e-3)


def test_plan_draws_the_contexts_in_range_and_level1_passes_by_their_probability(
    make_config,
) -> None:
    # the plan of a step is a pure function of (seed, step): no datasets needed to draw it
    config = make_config(num_contexts=[1, 3], level1_prob=0.5)
    plans = [StepBuilder([], config).plan(step) for step in range(200)]
    assert plans == [StepBuilder([], config).plan(step) for step in range(200)]
    assert {n for n, _ in plans} == {1, 2, 3}
    assert 60 < sum(coarse for _, coarse in plans) < 140
    assert plans != [StepBuilder([], make_config(seed=4)).plan(step) for step in range(200)]
    never = StepBuilder([], make_config(level1_prob=0.0))
    always = StepBuilder([], make_config(level1_prob=1.0))
    assert not any(never.plan(step)[1] for step in range(50))
    assert all(always.plan(step)[1] for step in range(50))


def test_guided_steps_follow_guided_prob(make_config) -> None:
    model = {**TINY_MODEL, "prior_gate": True}
    half = StepBuilder([], make_config(guided_prob=0.5, model=model))
    drawn = [half.is_guided(step) for step in range(200)]
    assert 60 < sum(drawn) < 140
    assert drawn == [half.is_guided(step) for step in range(200)]
    assert all(
        StepBuilder([], make_config(guided_prob=1.0, model=model)).is_guided(s) for s in range(20)
    )
    assert not any(StepBuilder([], make_config()).is_guided(s) for s in range(20))


def test_a_checkpoint_of_another_seed_is_refused(make_config) -> None:
    builder = StepBuilder([], make_config(seed=3))
    builder.check_state(builder.state_dict(), "here")  # its own state passes
    other = StepBuilder([], make_config(seed=8)).state_dict()
    with pytest.raises(InputError, match="here: .*drawn with seed 8, the config says 3"):
        builder.check_state(other, "here")


def test_validation_episodes_are_fixed_and_drawn_apart_from_training(make_config) -> None:
    source = {"kind": "synthetic", "shape": [16, 16, 16], "num_subjects": 2, "num_val_cases": 3}
    config = make_config(data=[source], num_val_episodes=3, val_num_contexts=2)
    _, val_sets = build_datasets(config.data)
    first = validation_episodes(val_sets, config)
    again = validation_episodes(val_sets, config)
    assert len(first) == 3 and all(e.context_in.shape[0] == 2 for e in first)
    for a, b in zip(first, again):
        assert a.task == b.task
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.context_out, b.context_out)
    # not the training stream's episodes of the same datasets
    training = StepBuilder(val_sets, config.replace(augment=False)).sampler(2).sample(0)
    assert not np.array_equal(training.target, first[0].target)
    assert validation_episodes([], config) == []
    assert validation_episodes(val_sets, config.replace(num_val_episodes=0)) == []


@pytest.mark.parametrize("family", ["segmentation", "enhancement"])
def test_train_step_logs_the_loss_of_each_family(make_config, family: str) -> None:
    config = make_config(task_weights={family: 1.0})
    train_sets, _ = build_datasets(config.data)
    batch = StepBuilder(train_sets, config).build(0)
    assert set(batch["family"]) == {family}
    net = build_model(config)
    out = train_step(net, torch.optim.SGD(net.parameters(), lr=0.0), batch)
    own, other = ("loss_segmentation", "loss_image")[:: 1 if family == "segmentation" else -1]
    assert out[own] == pytest.approx(out["loss"], rel=1e-6) and out["loss"] > 0
    assert math.isnan(out[other])
