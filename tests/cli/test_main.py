"""``cli/main.py`` itself: message wording, error handling, the two-value ``--context`` parser,
the ``predict`` option rules that need no model, and the registry listing of ``info``.

Whole predictions, cohorts and the help/usage sweep of every command are in the other files of
``tests/cli/``; nothing here loads a network.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from medverse.checkpoint.model_registry import list_models
from medverse.cli.main import app, clean_errors, cli_wording, warn
from medverse.errors import InputError


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("set resample=False to refuse", "set --no-resample to refuse"),
        ("refine='adaptive' needs compat='medverse'", "--refine adaptive needs --compat medverse"),
        ("overlap must be in [0, 1)", "--overlap must be in [0, 1)"),
        ("ensemble must be >= 1", "--ensemble must be >= 1"),
        ("context_batch must be >= 1", "--context-batch must be >= 1"),
        # only argument names followed by "must" are flags; plain words stay
        ("the overlap is 0.1; ensemble of 2", "the overlap is 0.1; ensemble of 2"),
        ("resample=False_x", "resample=False_x"),
    ],
)
def test_cli_wording(message, expected) -> None:
    assert cli_wording(message) == expected


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (InputError("context_batch must be >= 1"), 1, "error: --context-batch must be >= 1"),
        (FileNotFoundError(2, "No such file or directory", "t.nii.gz"), 1,
         "error: t.nii.gz: No such file or directory"),
        (MemoryError("cannot allocate 4 GiB"), 1,
         "error: out of memory (cannot allocate 4 GiB); lower --context-batch or --sw-batch-size"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
    ],
)  # fmt: skip
def test_clean_errors_turns_expected_failures_into_one_line(capsys, error, code, line) -> None:
    def command() -> None:
        raise error

    with pytest.raises(SystemExit) as info:
        clean_errors(command)()
    assert info.value.code == code
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1


def test_clean_errors_passes_results_and_lets_bugs_through(capsys) -> None:
    assert clean_errors(lambda x, *, y: x + y)(1, y=2) == 3

    def buggy() -> None:
        raise ValueError("a bug, not a user error")  # not a MedverseError: keep the traceback

    with pytest.raises(ValueError, match="a bug"):
        clean_errors(buggy)()
    warn("use mode='physical'")
    assert capsys.readouterr().err == "warning: use --align physical\n"


def _invoke(*args: str, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context=a.nii.gz", "b.nii.gz"], "takes two files separated by a space"),
        (["-ca.nii.gz", "b.nii.gz"], "takes two files separated by a space"),
        (["-c", "a.nii.gz", "b.nii.gz", "--context", "c.nii.gz"], "requires 2 arguments"),
        (["-c", "a.nii.gz", "-v"], "requires 2 files, got the option '-v' among them"),
        (["--context", "-x", "a.nii.gz", "b.nii.gz"], "got the option '-x' among them"),
        (["--overwrite"], "--output-dir and --overwrite go with --targets-from"),
        (["--output-dir", "d"], "--output-dir and --overwrite go with --targets-from"),
    ],
)
def test_predict_usage_errors_before_anything_loads(args, message) -> None:
    res = _invoke("predict", "-t", "t.nii.gz", "-o", "o.nii.gz", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_cohort_refuses_uncertainty(tmp_path) -> None:
    res = _invoke("predict", "--targets-from", tmp_path, "--output-dir", tmp_path / "o",
                  "--uncertainty", tmp_path / "u.nii.gz")  # fmt: skip
    assert res.exit_code == 2 and "summary.csv has uncertainty_mean" in res.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "no contexts: pass --context IMAGE OUTPUT (repeatable) or --contexts-from DIR"),
        (["-o", "{tmp}/o.txt"], {}, "unsupported output extension; use one of .nii.gz"),
        (["-c", "a", "b", "--uncertainty", "{tmp}/u.nii.gz"], {}, "--uncertainty needs --ensemble 2"),
        (["-c", "a", "b"], {"WORLD_SIZE": "2"}, "several processes (torchrun) need a cohort"),
    ],
)  # fmt: skip
def test_predict_input_errors_before_the_model_loads(tmp_path, args, env, message) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "o.nii.gz")]
    res = _invoke("predict", "-t", "t.nii.gz", "--model", "no-such-model", *args, env=env)
    assert res.exit_code == 1, res.output
    assert res.output.startswith("error: ") and message in res.output
    assert "no-such-model" not in res.output  # refused before the model is looked up
    assert not list(tmp_path.iterdir())


def test_info_without_a_model_lists_the_registry() -> None:
    res = _invoke("info")
    assert res.exit_code == 0, res.output
    for name in list_models():
        assert any(line.startswith(name + " ") for line in res.output.splitlines()), name
    assert "bundled weights" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--overwrite"], "Error: --output-dir and --overwrite go with --targets-from"),
        (["--context=a.nii.gz", "b.nii.gz"], "takes two files separated by a space"),
    ],
)
def test_entry_point_usage_error_is_one_usage_line_and_exit_2(args, message) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "medverse", "predict", "-t", "t.nii.gz", "-o", "o.nii.gz", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == ""
    assert res.stderr.startswith("Usage: medverse predict [OPTIONS]")
    assert res.stderr.count("Usage:") == 1 and message in res.stderr
    assert "Traceback" not in res.stderr
