"""benchmarks/gpu_check.py runs end to end: ``--device cpu --quick`` in a subprocess (smoke test).

No GPU is needed: the quick mode runs every check at tiny sizes on the CPU (about a minute on one
core; bf16 once, on a crop, as CPUs without native bf16 emulate it 40x slower), so the script is
known to work before a GPU is lent to run it for real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
QUICK_ROWS = [
    ("golden forward_128 fp32, AR pair", "pass"),
    ("golden forward_128 fp32, no AR", "skipped"),
    ("golden autoregressive_200 fp32, driver", "skipped"),
    ("bf16 vs fp32 forward_128, 64³ crop", "info"),
    ("bf16 vs fp32 autoregressive_200", "skipped"),
    ("medverse-base 64³ window, 2 contexts + AR, fp32", "info"),
    ("medverse-base 64³ window, 2 contexts + AR, bf16", "skipped"),
    ("medverse-small 64³ volume, 2 contexts, fp32", "info"),
    ("medverse-small 64³ volume, 2 contexts, bf16", "skipped"),
    ("training train_small_gpu.yaml, 3 steps", "pass"),
    ("total wall time", "pass"),
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_quick_cpu_run_prints_every_row() -> None:
    res = _run("--device", "cpu", "--quick")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert any(line.startswith("### gpu_check on cpu") for line in lines), res.stdout
    assert "| check | result | limit | pass/fail |" in lines
    rows = {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in lines) if cells}
    for check, status in QUICK_ROWS:
        assert check in rows, (check, res.stdout)
        assert rows[check][-1] == status, rows[check]
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_requested_without_cuda_is_one_line() -> None:
    res = _run("--device", "cuda")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("gpu_check: --device cuda, but torch")
