"""Training windows, steps, validation, the run folder and ``medverse train``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medverse.data.episodes import Episode
from medverse.errors import InputError
from medverse.training import loop, steps
from medverse.training.config import TrainConfig
from medverse.training.distributed import DistInfo
from medverse.training.loop import run
from medverse.training.model_setup import build_model, lr_factor
from medverse.training.scoring import context_mean_dice, validate
from medverse.training.sources import build_datasets
from medverse.training.steps import StepBuilder, train_step, validation_episodes

from .conftest import TINY_MODEL, fake_episode, tiny_config

# -- schedule ----------------------------------------------------------------------------------


def test_lr_schedule_warmup_then_cosine() -> None:
    config = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(4, config) == pytest.approx(0.5)
    assert lr_factor(10, config) == pytest.approx(1.0)
    assert lr_factor(60, config) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos = 0
    assert lr_factor(110, config) == pytest.approx(0.1)
    flat = config.replace(schedule="constant")
    assert lr_factor(100, flat) == 1.0


# -- guided steps (the windows themselves: tests/training/test_coarse_to_fine.py) -------------


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


# -- validation ----------------------------------------------------------------------------------


def test_context_mean_baseline_by_hand() -> None:
    episode = fake_episode(shape=(4, 4, 4), num_contexts=3)
    target = np.zeros((1, 4, 4, 4), np.float32)
    target[0, :2] = 1  # 32 voxels
    contexts = np.zeros((3, 1, 4, 4, 4), np.float32)
    contexts[:2, 0, :2] = 1  # two of three agree with the target: mean 2/3 > 0.5
    contexts[2, 0, 2:] = 1
    contexts[:2, 0, 2, :2] = 1  # 8 extra voxels with mean 2/3: false positives
    episode = Episode(
        episode.target, target, episode.context_in, contexts, "segmentation", "segmentation", 0
    )
    assert context_mean_dice([episode]) == pytest.approx(2 * 32 / (32 + 40))
    assert math.isnan(context_mean_dice([fake_episode(family="enhancement")]))


def test_validate_scores_each_family(make_config) -> None:
    config = make_config(num_val_episodes=4, val_num_contexts=2)
    _, val_sets = build_datasets(config.data)
    episodes = validation_episodes(val_sets, config)
    families = {e.family for e in episodes}
    net = build_model(config)
    metrics = validate(net, episodes)
    assert net.training  # restored
    if "segmentation" in families:
        assert 0.0 <= metrics["dice"] <= 1.0
    if families - {"segmentation"}:
        assert math.isfinite(metrics["psnr"]) and -1.0 <= metrics["ssim"] <= 1.0


def test_validate_scores_with_the_evaluation_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in driver returns the mean of the context outputs (offset so some voxels leave
    # [0, 1] and get clamped); validate must give exactly what evaluation.metrics gives on it.
    from medverse.evaluation import metrics
    from medverse.inference import pipeline
    from medverse.inference.driver import InferenceResult
    from medverse.inference.pyramid import plan_levels

    def mean_of_contexts(net, target, context_in, context_out, settings, **kwargs):
        plan = plan_levels(tuple(target.shape[-3:]), 16)
        return InferenceResult(output=context_out.float().mean(1) * 1.2 - 0.1, plan=plan)

    monkeypatch.setattr(pipeline, "run_inference", mean_of_contexts)
    segmentation = fake_episode(shape=(12, 12, 12), num_contexts=3, seed=1)
    enhancement = fake_episode(shape=(12, 12, 12), family="enhancement", seed=2)
    scores = validate(torch.nn.Conv3d(1, 1, 1), [segmentation, enhancement])

    def stand_in(episode: Episode) -> np.ndarray:
        return np.asarray(episode.context_out, np.float32).mean(0)[0] * 1.2 - 0.1

    reference = segmentation.target_reference[0]
    expected_dice = metrics.dice(stand_in(segmentation), reference)
    image = np.clip(stand_in(enhancement), 0, 1)
    expected_psnr = metrics.psnr(image, enhancement.target_reference[0], 1.0)
    expected_ssim = metrics.ssim(image, enhancement.target_reference[0], 1.0, use_monai=True)
    assert 0.1 < expected_dice < 0.99 and 0.01 < abs(expected_ssim) < 0.99  # neither trivial
    assert scores["dice"] == pytest.approx(expected_dice, rel=1e-6)
    assert scores["dice_segmentation"] == scores["dice"]
    assert scores["psnr"] == pytest.approx(expected_psnr, rel=1e-6)
    assert scores["ssim"] == pytest.approx(expected_ssim, rel=1e-6)


# -- the run folder ------------------------------------------------------------------------------


def test_run_writes_logs_checkpoints_and_weights(make_config) -> None:
    from medverse.checkpoint.factory import load_model

    threads = torch.get_num_threads()
    config = make_config(
        steps=3, checkpoint_every=2, val_every=3, num_val_episodes=2, keep_checkpoints=1
    )
    result = run(config)
    out = Path(config.out_dir)
    assert torch.get_num_threads() == threads
    assert result.step == 3 and result.weights == out / "model"
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*.pt")) == ["step_0000003.pt"]
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(loop.CSV_COLUMNS)
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]  # step 0: validation before training
    assert rows[0]["val_dice_baseline"] != ""
    assert all(float(r["loss"]) > 0 for r in rows[1:])
    assert rows[3]["val_dice"] != "" or rows[3]["val_psnr"] != ""
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert TrainConfig.from_file(out / "config.yaml") == config
    net = load_model(result.weights)
    state = torch.load(result.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    # a second run into the same folder must be explicit
    with pytest.raises(InputError, match="already holds a run"):
        run(config)


def test_resume_without_checkpoint_says_so(make_config) -> None:
    with pytest.raises(InputError, match="no checkpoint"):
        run(make_config("empty"), resume=True)


# -- medverse train ------------------------------------------------------------------------------


def test_cli_train_on_nnunet_dataset_runs_every_family(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medverse.cli.main import app, clean_errors
    from medverse.cli.train import train
    from medverse.data.synthesis import write_synthetic_dataset

    if not any(c.name == "train" for c in app.registered_commands):
        app.command("train")(clean_errors(train))
    root = write_synthetic_dataset(
        tmp_path / "Dataset007_Tiny",
        num_subjects=5,
        shape=(20, 20, 20),
        num_classes=3,
        num_modalities=2,
        seed=1,
    )
    config = tiny_config(
        tmp_path / "run",
        data=[{"kind": "nnunet", "path": str(root), "num_val_cases": 0}],
        task_weights={"segmentation": 1, "transformation": 1, "enhancement": 1},
        steps=4,
        seed=0,
    )
    path = config.save(tmp_path / "run.yaml")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--config", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "weights:" in result.output
    with open(tmp_path / "run" / "log.csv", newline="") as fh:
        families = {f for row in csv.DictReader(fh) for f in row["families"].split("+") if f}
    assert families == {"segmentation", "transformation", "enhancement"}

    missing = tmp_path / "missing.yaml"
    bad = runner.invoke(app, ["train", "--config", str(missing)])
    assert bad.exit_code == 1 and str(missing) in bad.output
    wrong = tmp_path / "run.txt"
    wrong.write_text("steps: 1\n")
    bad = runner.invoke(app, ["train", "--config", str(wrong)])
    assert bad.exit_code == 1 and ".yaml, .yml or .json" in bad.output


def test_tiny_model_constant_matches_conftest() -> None:
    assert TrainConfig(model=TINY_MODEL).model_config.window == 16


def test_nnunet_source_holds_out_the_last_cases(tmp_path: Path) -> None:
    from medverse.data.synthesis import write_synthetic_dataset
    from medverse.training.config import DataSource

    root = write_synthetic_dataset(
        tmp_path / "Dataset008_Split", num_subjects=5, shape=(12, 12, 12)
    )
    train_sets, val_sets = build_datasets(
        [DataSource(kind="nnunet", path=str(root), num_val_cases=2)]
    )
    assert [len(d) for d in train_sets] == [3] and [len(d) for d in val_sets] == [2]
    assert set(train_sets[0].case_names).isdisjoint(val_sets[0].case_names)
    with pytest.raises(InputError, match="fewer than 2 for training"):
        build_datasets([DataSource(kind="nnunet", path=str(root), num_val_cases=4)])


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
    from medverse.training.model_setup import _optimizer

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


def test_the_names_of_the_split_loop_stay_importable_from_their_old_homes() -> None:
    # training/loop.py was split into sources, steps, model_setup, scoring and checkpoints;
    # its public names stay importable from medverse.training.loop for one release
    import medverse.training as training
    from medverse.training import checkpoints, model_setup, scoring, sources

    homes = {
        "build_datasets": sources,
        "StepBuilder": steps,
        "train_step": steps,
        "validation_episodes": steps,
        "build_model": model_setup,
        "lr_factor": model_setup,
        "context_mean_dice": scoring,
        "validate": scoring,
        "latest_checkpoint": checkpoints,
        "CHECKPOINT_VERSION": checkpoints,
    }
    for name, module in homes.items():
        assert name in loop.__all__
        assert getattr(loop, name) is getattr(module, name), name
        if name in training.__all__:
            assert getattr(training, name) is getattr(module, name), name
