"""``cli/options.py``: shared options, and the old option spellings kept for one release.

One spelling per concept across commands: a count of contexts is ``--num-contexts`` (``-k``), an
output folder ``--output-dir`` (``-o``). ``medverse demo --contexts`` / ``--output`` and
``medverse evaluate --out`` still work, hidden from ``--help``, with a warning. The entry-point
tests run the installed ``medverse`` script in a subprocess and stop at the first check of the
value (no model run), whose message quotes the value: so each spelling is seen to reach it.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import typer
from typer.testing import CliRunner

from medverse.cli.options import old_spelling, spelled


def _medverse(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("medverse") is None:
        pytest.fail("the medverse console script is not on PATH: pip install -e .")
    return subprocess.run(
        ["medverse", *args], capture_output=True, text=True, timeout=120, check=False
    )


def _app() -> typer.Typer:
    app = typer.Typer()
    old = old_spelling("--count", "--num-things")

    @app.command()
    def count(
        ctx: typer.Context,
        num_things: int = typer.Option(4, "--num-things", "-k"),
        old_count: int = old,
    ) -> None:
        typer.echo(
            f"value {spelled(ctx, num_things, old_count, new='--num-things', old='--count', default=4)}"
        )

    return app


@pytest.mark.parametrize(
    ("args", "value", "warned"),
    [
        ([], 4, False),
        (["--num-things", "7"], 7, False),
        (["-k", "7"], 7, False),
        (["--count", "7"], 7, True),
        (["--count", "7", "-k", "7"], 7, True),  # the same value twice is not a conflict
    ],
)
def test_spelled_takes_either_spelling(args, value, warned) -> None:
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, res.output
    assert f"value {value}" in res.output
    assert ("--count is now --num-things" in res.output) is warned


def test_spelled_refuses_two_different_values() -> None:
    res = CliRunner().invoke(_app(), ["--count", "7", "-k", "5"])
    assert res.exit_code == 2
    assert "--count is the old spelling of --num-things: give one of them" in res.output


def test_old_spelling_is_hidden_from_help() -> None:
    res = CliRunner().invoke(_app(), ["--help"])
    assert res.exit_code == 0
    assert "--num-things" in res.output and "--count" not in res.output


@pytest.mark.parametrize("command", ["demo", "evaluate"])
def test_help_shows_the_new_spellings_only(command) -> None:
    res = _medverse(command, "--help")
    assert res.returncode == 0, res.stderr
    assert "-o, --output-dir" in res.stdout
    assert "-k, --num-contexts" in res.stdout
    for old in ("--contexts ", "--output ", "--out "):
        assert old not in res.stdout


@pytest.mark.parametrize(
    "flag", ["--num-contexts", "-k", "--contexts"], ids=["new", "short", "old"]
)
def test_demo_context_count_spellings(tmp_path, flag) -> None:
    res = _medverse("demo", "--output-dir", str(tmp_path / "d"), flag, "17")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "error: --num-contexts must be in 1..16, got 17" in res.stderr
    assert ("--contexts is now --num-contexts" in res.stderr) is (flag == "--contexts")
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("demo", "--output-dir"),
        ("demo", "-o"),
        ("demo", "--output"),
        ("evaluate", "--output-dir"),
        ("evaluate", "-o"),
        ("evaluate", "--out"),
    ],
)
def test_output_folder_spellings(tmp_path, command, flag) -> None:
    missing = tmp_path / "no" / "report"
    res = _medverse(command, flag, str(missing))
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"'{missing}'" in res.stderr and "does not exist" in res.stderr
    old = flag in ("--output", "--out")
    assert (f"{flag} is now --output-dir" in res.stderr) is old
    assert "Traceback" not in res.stderr


def test_evaluate_needs_an_output_folder() -> None:
    res = _medverse("evaluate", "--subjects", "2")
    assert res.returncode == 2
    assert "Usage: medverse evaluate" in res.stderr
    assert "Error: Missing option '--output-dir' / '-o'." in res.stderr


def test_both_spellings_with_different_values_are_a_usage_error(tmp_path) -> None:
    res = _medverse("demo", "-k", "2", "--contexts", "3", "-o", str(tmp_path / "d"))
    assert res.returncode == 2
    assert "--contexts is the old spelling of --num-contexts: give one of them" in res.stderr
    assert not (tmp_path / "d").exists()


def test_choice_types_are_the_librarys_constants() -> None:
    from medverse.cli.options import Engine, ModelAlign, Refine
    from medverse.evaluation.model_method import MODEL_ALIGNMENTS
    from medverse.inference.driver import REFINE_MODES
    from medverse.registration.settings import ENGINES

    assert [m.value for m in Refine] == list(REFINE_MODES)
    assert sorted(m.value for m in ModelAlign) == sorted(MODEL_ALIGNMENTS)
    assert [m.value for m in Engine] == list(ENGINES)


@pytest.mark.parametrize(("option", "value"), [("--align", "nearest"), ("--engine", "elastix")])
def test_evaluate_choices_are_usage_errors_before_any_work(tmp_path, option, value) -> None:
    from medverse.cli.main import app

    res = CliRunner().invoke(app, ["evaluate", "-o", str(tmp_path / "r"), option, value])
    assert res.exit_code == 2, res.output
    assert f"Error: Invalid value for '{option}'" in res.output
    assert f"'{value}' is not one of" in res.output
    assert not (tmp_path / "r").exists()
