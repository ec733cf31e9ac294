"""``--refine all|adaptive`` of ``medverse predict`` and ``medverse evaluate``, through the
installed entry point in a subprocess (what a user runs)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _medverse(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("medverse") is None:
        pytest.fail("the medverse console script is not on PATH: pip install -e .")
    return subprocess.run(
        ["medverse", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_help_mentions_refine(command) -> None:  # noqa: ANN001
    res = _medverse(command, "--help")
    assert res.returncode == 0, res.stderr
    assert "--refine" in res.stdout and "adaptive" in res.stdout


def test_predict_bad_refine_is_a_usage_error() -> None:
    res = _medverse("predict", "-t", "t.nii.gz", "-o", "o.nii.gz", "--refine", "sometimes")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Error: Invalid value for '--refine'" in res.stderr
    assert res.stderr.count("Usage: medverse predict") == 1
    assert "Traceback" not in res.stderr


def test_evaluate_bad_refine_is_a_usage_error(tmp_path) -> None:  # noqa: ANN001
    res = _medverse("evaluate", "--out", str(tmp_path / "r"), "--refine", "sometimes")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Error: Invalid value for '--refine'" in res.stderr and "'adaptive'" in res.stderr
    assert res.stderr.count("Usage: medverse evaluate") == 1
    assert "Traceback" not in res.stderr


def test_adaptive_with_released_plan_is_refused(tmp_path) -> None:  # noqa: ANN001
    res = _medverse(
        "predict", "-t", "t.nii.gz", "-o", str(tmp_path / "o.nii.gz"),
        "-c", "a.nii.gz", "b.nii.gz", "--compat", "released", "--refine", "adaptive",
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "error: --refine adaptive cannot go with --compat released" in res.stderr
    assert "Traceback" not in res.stderr
