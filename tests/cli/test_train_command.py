"""``cli/train.py``: how ``medverse train`` turns its options into a :func:`run` call and reports.

``python -m medverse.training`` shares this path (``training/command.py``): see
``tests/training/test_command.py``.

A real (tiny) run through the command is in ``tests/training/test_loop.py``; here ``run`` is
replaced by a recorder, so the overrides, the ``--time-limit`` conversion, the refusals and the
three report lines are checked in milliseconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medverse.cli.main import app
from medverse.training.config import TrainConfig
from medverse.training.loop import TrainResult
from tests.conftest import TINY_TRAIN


def _config(tmp_path: Path, suffix: str = ".yaml") -> Path:
    return TrainConfig.from_dict(TINY_TRAIN).save(tmp_path / f"run{suffix}")


def _train(*args) -> object:
    return CliRunner().invoke(app, ["train", *map(str, args)])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_options_reach_run(tmp_path, training_runs, suffix) -> None:
    res = _train("--config", _config(tmp_path, suffix), "--steps", 7, "--out-dir",
                 tmp_path / "out", "--stop-at", 3, "--time-limit", 1.5, "--resume",
                 "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    (call,) = training_runs.calls
    assert call["config"].steps == 7 and call["config"].out_dir == str(tmp_path / "out")
    assert call["config"].model_config.channels == (4, 8, 16)
    assert (call["resume"], call["stop_at"], call["progress"]) == (True, 3, False)
    assert call["time_limit"] == pytest.approx(90.0)  # minutes on the command line, s for run
    assert res.output == f"trained 7 steps in 1.2 s; weights: {Path('w/model')}\n"


def test_defaults_keep_the_config(tmp_path, training_runs) -> None:
    assert _train("-c", _config(tmp_path)).exit_code == 0
    (call,) = training_runs.calls
    assert call["config"] == TrainConfig.from_dict(TINY_TRAIN)
    assert (call["resume"], call["stop_at"], call["time_limit"], call["progress"]) == (
        False, None, None, True,
    )  # fmt: skip


def test_stopped_run_says_how_to_continue_and_shows_validation(tmp_path, training_runs) -> None:
    training_runs.results.append(
        TrainResult(
            step=4, out_dir=tmp_path, checkpoint=Path("ck/step4.pt"),
            validation=[(2, {"dice": 0.1, "loss": 9.0}), (4, {"dice": 0.5, "psnr": 21.25})],
        )
    )  # fmt: skip
    res = _train("-c", _config(tmp_path), "--stop-at", 4)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"stopped at step 4/10; checkpoint: {Path('ck/step4.pt')} (continue with --resume)",
        "validation at step 4: dice 0.5000, psnr 21.2500",  # the last one; loss not shown
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "with command-line overrides: steps must be"),
        (["--time-limit", "0"], "--time-limit must be a positive number of minutes, got 0.0"),
        (["--time-limit", "-5"], "got -5.0"),
        (["--stop-at", "-1"], "--stop-at must be a step >= 1, got -1"),
        (["--stop-at", "0"], "--stop-at must be a step >= 1, got 0"),
    ],
)
def test_bad_overrides_are_refused_before_training(tmp_path, training_runs, args, message) -> None:
    path = _config(tmp_path)
    res = _train("-c", path, *args)
    assert res.exit_code == 1, res.output
    assert res.output.startswith("error: ") and message in res.output
    assert res.output.count("\n") == 1
    if "--steps" in args:
        assert f"training config '{path}'" in res.output
    assert training_runs.calls == []


def test_wrong_config_suffix_is_refused(tmp_path, training_runs) -> None:
    wrong = tmp_path / "run.toml"
    wrong.write_text("steps = 1\n")
    res = _train("--config", wrong)
    assert res.exit_code == 1
    assert res.output == (
        f"error: training config '{wrong}': expected a .yaml, .yml or .json file, got '.toml'\n"
    )
    assert training_runs.calls == []


def test_entry_point_usage_error_is_one_usage_line_and_exit_2(tmp_path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "medverse", "train", "--steps", "x", "-c", str(tmp_path / "run.yaml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and "Invalid value for '--steps'" in res.stderr
    assert res.stderr.count("Usage: medverse train") == 1 and "Traceback" not in res.stderr
