"""benchmarks/bench_inference.py --compare: baseline rows measured in the same run (smoke test).

Tiny volumes (64^3, one context, one thread): the released-plan baseline and this code's default
give the same output for a single-window volume (max |diff| 0), and a git revision as baseline
runs that revision's code (the script refuses to print a row otherwise).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_inference.py"


def _bench(*args: str) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "64", "--contexts", "1", "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| 64^3")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


@pytest.mark.slow
def test_compare_released_prints_the_baseline_then_ratios() -> None:
    rows = _bench("--compare", "released", "--repeats", "2")  # one row each, the median
    assert [row[2] for row in rows] == ["released plan", "refine all"]
    assert len(rows[0]) == len(rows[1]) == 10
    assert rows[0][7:] == ["", "", ""]  # the baseline has no ratio to itself
    assert float(rows[1][7]) > 0 and float(rows[1][8]) > 0
    assert float(rows[1][9]) == 0.0  # one 64^3 window: both plans are the same call


@pytest.mark.slow
def test_compare_a_revision_runs_that_revision() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    rows = _bench("--compare", "HEAD")
    assert [row[2] for row in rows] == ["rev HEAD", "refine all"]
    assert float(rows[1][9]) < 1e-5
