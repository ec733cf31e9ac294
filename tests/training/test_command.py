"""``training/command.py`` and ``python -m medverse.training``: the same checks, messages and
summary as ``medverse train`` (``tests/cli/test_train_command.py``), for the ``torchrun`` entry
point. ``run`` is replaced by a recorder where a real run is not the point."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medverse.cli.main import app
from medverse.errors import InputError
from medverse.training.__main__ import main as module_main
from medverse.training.config import TrainConfig
from medverse.training.loop import run
from tests.conftest import TINY_TRAIN
from tests.training.conftest import tiny_config


def _both(capsys, args: list[str]) -> tuple[tuple[int, str, str], tuple[int, str]]:
    """(exit code, stdout, stderr) of ``python -m medverse.training`` and (exit code, output) of
    ``medverse train`` for the same arguments, both in this process."""
    code = module_main(args)
    captured = capsys.readouterr()
    cli = CliRunner().invoke(app, ["train", *args])
    return (code, captured.out, captured.err), (cli.exit_code, cli.output)


def test_options_reach_run_and_the_summary_is_the_commands(tmp_path, training_runs, capsys) -> None:
    path = TrainConfig.from_dict(TINY_TRAIN).save(tmp_path / "run.yaml")
    args = ["--config", str(path), "--steps", "7", "--out-dir", str(tmp_path / "o"),
            "--stop-at", "3", "--time-limit", "1.5", "--resume", "--no-progress"]  # fmt: skip
    (code, out, err), (cli_code, cli_output) = _both(capsys, args)
    assert (code, cli_code, err) == (0, 0, "")
    assert out == cli_output == f"trained 7 steps in 1.2 s; weights: {Path('w/model')}\n"
    first, second = training_runs.calls
    assert first == second
    assert first["config"].steps == 7 and first["config"].out_dir == str(tmp_path / "o")
    assert (first["resume"], first["stop_at"], first["progress"]) == (True, 3, False)
    assert first["time_limit"] == pytest.approx(90.0)  # minutes on the command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "with command-line overrides: steps must be an integer >= 1, got 0"),
        (["--time-limit", "nan"], "--time-limit must be a positive number of minutes, got nan"),
        (["--time-limit", "-1"], "--time-limit must be a positive number of minutes, got -1.0"),
        (["--stop-at", "-5"], "--stop-at must be a step >= 1, got -5"),
    ],
)
def test_both_entry_points_refuse_the_same_way_before_training(
    tmp_path, training_runs, capsys, args, message
) -> None:
    path = TrainConfig.from_dict(TINY_TRAIN).save(tmp_path / "run.yaml")
    (code, out, err), (cli_code, cli_output) = _both(capsys, ["--config", str(path), *args])
    assert (code, cli_code, out) == (1, 1, "")
    assert err == cli_output
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert training_runs.calls == []


def test_a_missing_config_option_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        module_main(["--steps", "3"])
    assert exited.value.code == 2
    assert "the following arguments are required: --config" in capsys.readouterr().err


def test_run_refuses_limits_that_would_train_nothing(tmp_path) -> None:
    config = tiny_config(tmp_path / "r")
    with pytest.raises(InputError, match="stop_at must be a step >= 1, got 0"):
        run(config, stop_at=0)
    with pytest.raises(InputError, match="time_limit must be a positive number of seconds"):
        run(config, time_limit=math.nan)
    assert not (tmp_path / "r").exists()


def test_an_out_dir_that_cannot_be_made_is_named_before_any_data_is_built(
    tmp_path, monkeypatch
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    config = tiny_config(blocker / "run")
    built = []
    monkeypatch.setattr("medverse.training.loop.build_datasets", lambda *a: built.append(a))
    with pytest.raises(InputError, match=rf"out_dir '{blocker / 'run'}': cannot create the run"):
        run(config)
    assert built == [] and blocker.read_text() == "not a folder"


def test_the_module_entry_point_in_a_subprocess(tmp_path) -> None:
    path = TrainConfig.from_dict(TINY_TRAIN).save(tmp_path / "run.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "medverse.training", "--config", str(path), "--stop-at", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == "error: --stop-at must be a step >= 1, got 0\n"
    assert not (tmp_path / "runs").exists()


def test_a_run_that_fails_on_its_data_leaves_no_run_folder(tmp_path) -> None:
    missing = tmp_path / "Dataset001_Missing"
    config = tiny_config(tmp_path / "new" / "run", data=[{"kind": "nnunet", "path": str(missing)}])
    with pytest.raises(InputError, match="dataset.json' not found"):
        run(config)
    assert not (tmp_path / "new").exists()
