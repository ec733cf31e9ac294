"""The installed ``medverse`` entry point (and ``python -m medverse``) in a subprocess.

CliRunner calls the command object in-process and hides how the console script handles help and
usage errors; these tests run what a user runs: help exits 0, a usage error is click's usage line
+ ``Error: ...`` with exit code 2, and nothing prints a traceback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

COMMANDS = ["predict", "convert", "info", "train", "evaluate", "demo"]
ENTRY_POINTS = [["medverse"], [sys.executable, "-m", "medverse"]]


def _run(prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    if prefix[0] == "medverse" and shutil.which("medverse") is None:
        pytest.fail("the medverse console script is not on PATH: pip install -e .")
    return subprocess.run(
        [*prefix, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("prefix", ENTRY_POINTS, ids=["medverse", "python-m"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help(prefix, flag) -> None:
    res = _run(prefix, flag)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: medverse [OPTIONS] COMMAND")
    for command in COMMANDS:
        assert command in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_help_exits_0_with_an_example(command, flag) -> None:
    res = _run(["medverse"], command, flag)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith(f"Usage: medverse {command} ")
    assert f"  medverse {command} " in res.stdout  # one example per command
    assert res.stderr == ""
    assert "Traceback" not in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict"], "Error: Missing option '--target'"),
        (["predict", "--target", "t.nii.gz"], "Error: Missing option '--output'"),
        (["predict", "--contexts", "dir"], "Error: No such option: --contexts"),
        (["predict", "-t", "t.nii.gz", "-o", "o.nii.gz", "-c", "a.nii.gz"], "--context"),
        (
            ["predict", "-t", "t", "-o", "o", "--align", "rigid"],
            "Error: Invalid value for '--align'",
        ),
        (["convert"], "Error: Missing argument"),
        (["train"], "Error: Missing option '--config'"),
        (["evaluate", "--no-such-flag"], "Error: No such option: --no-such-flag"),
        (["demo", "--contexts", "many"], "Error: Invalid value for '--contexts'"),
        (["bogus"], "Error: No such command 'bogus'"),
    ],
)
def test_usage_errors_exit_2_with_one_usage_line(args, message) -> None:
    res = _run(["medverse"], *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    assert res.stderr.count("Usage: medverse") == 1
    assert "Traceback" not in res.stdout + res.stderr


def test_python_m_usage_error() -> None:
    res = _run(ENTRY_POINTS[1], "predict", "--target", "t.nii.gz")
    assert res.returncode == 2
    assert "Usage: medverse predict" in res.stderr and "Missing option '--output'" in res.stderr
    assert "Traceback" not in res.stderr


def test_no_arguments_shows_help_without_traceback() -> None:
    res = _run(["medverse"])
    assert res.returncode in (0, 2)  # click >= 8.2 exits 2 after no_args_is_help
    assert "Usage: medverse [OPTIONS] COMMAND" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_predict_module_for_torchrun() -> None:
    res = _run([sys.executable, "-m", "medverse.predict"], "-h")
    assert res.returncode == 0 and res.stdout.startswith("Usage: medverse predict")
    assert "--targets-from" in res.stdout and "--output-dir" in res.stdout
    res = _run([sys.executable, "-m", "medverse.predict"], "--targets-from", "x")
    assert res.returncode == 2 and "Missing option '--output-dir'" in res.stderr
