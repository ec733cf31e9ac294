"""The run (``training/loop.py``): the run folder, its log and checkpoints, and ``medverse train``.

The parts of a run have their own files: ``test_sources.py``, ``test_steps.py``,
``test_model_setup.py``, ``test_scoring.py``, ``test_checkpoints.py`` (resuming a whole run:
``test_resume.py``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from medverse.errors import InputError
from medverse.training import loop, steps
from medverse.training.config import TrainConfig
from medverse.training.loop import run

from .conftest import TINY_MODEL, tiny_config

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
